"""Rich renderables for one handler whole: ``handlers show`` and ``handlers result``."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from netdist.adminctl import view
from netdist.adminctl.job_render import jobs_table
from netdist.adminctl.render import add_row, fmt_size, fmt_time, handler_state, progress_text, text
from netdist.api.v1 import admin_pb2
from netdist.printable import printable, printable_json


def handler_detail(h: admin_pb2.HandlerInfo) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    total = str(h.jobs_total) if h.has_total else "unknown"
    rows: list[tuple[str, str | Text]] = [
        ("id", h.id),
        ("job", h.job_name),
        ("package", f"{h.package} {h.package_version}".strip()),
        ("handler", h.handler),
        ("state", handler_state(h)),
        ("message", h.message or "-"),
        *([("waiting", text(h.waiting, style="yellow"))] if h.waiting else []),
        ("summary", h.result_summary or "-"),
        (
            "jobs",
            f"{h.jobs_available} available, {h.jobs_pending} pending, "
            f"{h.jobs_processed} processed, {h.jobs_failed} failed, {total} in total",
        ),
        ("progress", progress_text(h)),
        ("script sha256", h.script_sha256 or "-"),
        ("script added by", h.script_uploaded_by or "-"),
        ("created", fmt_time(h.created_at)),
        ("started", fmt_time(h.started_at)),
        ("finished", fmt_time(h.finished_at)),
        ("next start", fmt_time(h.next_start_at)),
    ]
    if h.unservable_platforms:  # its dependencies have no wheels there: those workers get none of its jobs
        rows.append(("unservable on", Text(printable(", ".join(h.unservable_platforms)), style="red")))
    for key, value in rows:
        add_row(grid, key, value)
    running: list[RenderableType] = [jobs_table(h.running)] if h.running else []
    return Group(
        grid,
        *running,
        Text("\nsettings [tool.netdist]", style="bold"),
        _json_block(h.settings_json),
        Text("\ncustom settings [tool.netdist.settings]", style="bold"),
        _json_block(h.custom_settings_json),
    )


def handler_result(h: admin_pb2.HandlerInfo) -> RenderableType:
    """What ``handlers result`` prints: the summary, then the saved state as JSON."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    add_row(grid, "handler", f"{h.id} ('{h.job_name}')")
    add_row(grid, "state", handler_state(h))
    add_row(grid, "summary", h.result_summary or "-")
    title = Text(f"\nsaved state ({fmt_size(h.handler_state_bytes)})", style="bold")
    if h.handler_state_bytes and not h.handler_state_json:
        note = f"not shown: over the {fmt_size(MAX_SHOWN_STATE)} a reply carries"
        return Group(grid, title, Text(note, style="yellow"))
    return Group(grid, title, _json_block(h.handler_state_json or "{}"))


MAX_SHOWN_STATE = 256 * 1024
"""The server's limit (netdist.server.admin_service.MAX_SHOWN_STATE), for the note."""


def _json_block(raw: str) -> RenderableType:
    value = view.parse_json(raw)
    if value is None:
        return Text("-")
    if isinstance(value, str) and value == raw:  # not valid JSON: show as sent
        return text(raw)
    block = JSONHighlighter()(Text(printable_json(value)))  # rich.json.JSON would undo the escapes
    block.no_wrap = True
    return block
