"""``netdist-admin jobs deps``: a handler instance's dependency lock as a table per platform, or JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from netdist.adminctl import render
from netdist.adminctl.view import when
from netdist.api.v1 import admin_pb2


def deps_dict(d: admin_pb2.GetJobScriptDepsResponse) -> dict[str, Any]:
    return {
        "handler_id": d.handler_id,
        "job_name": d.job_name,
        "dependencies": list(d.dependencies),
        "requires_python": d.requires_python or None,
        "pinned": d.pinned,
        "pinned_lock": d.pinned_lock or None,
        "platforms": {
            p.key: {
                "server": p.server,
                "servable": not p.error,
                "error": p.error or None,
                "resolved_at": when(p.resolved_at),
                "wheels": [
                    {"name": w.name, "version": w.version, "filename": w.filename, "sha256": w.sha256, "size": w.size}
                    for w in p.wheels
                ],
            }
            for p in d.platforms
        },
    }


def deps_detail(d: admin_pb2.GetJobScriptDepsResponse) -> RenderableType:
    head = render.text(f"handler {d.handler_id} ('{d.job_name}'): ", style="bold")
    if not d.dependencies and not d.pinned:
        head.append_text(render.text("no dependencies (the package's wheels only)"))
        return head
    head.append_text(render.text(", ".join(d.dependencies) or "-"))
    if d.requires_python:
        head.append_text(render.text(f"; requires-python {d.requires_python}"))
    if d.pinned:
        head.append_text(render.text("; within a pinned lock"))
    parts: list[RenderableType] = [head]
    for p in d.platforms:
        title = render.text(p.key + (" (the server's)" if p.server else ""), style="bold")
        if p.error:
            title.append_text(render.text(": cannot be served: " + p.error, style="red"))
            parts.append(title)
            continue
        table = Table(title=title, title_justify="left", show_edge=False)
        for column in ("project", "version", "sha256", "size", "wheel"):
            table.add_column(column)
        for w in p.wheels:
            render.add_row(table, w.name, w.version, w.sha256[:16], render.fmt_size(w.size), w.filename)
        parts.append(table)
    return Group(*parts)
