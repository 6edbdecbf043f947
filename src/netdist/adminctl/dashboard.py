"""``netdist-admin watch``: a live dashboard polling handlers and workers."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from netdist.adminctl import render
from netdist.adminctl.client import AdminClient
from netdist.api.v1 import admin_pb2
from netdist.errors import NetDistError


def build(
    handlers: Sequence[admin_pb2.HandlerInfo],
    workers: Sequence[admin_pb2.WorkerInfo],
    *,
    address: str,
    error: str = "",
    now: float | None = None,
) -> RenderableType:
    """One frame of the dashboard."""
    now = time.time() if now is None else now
    header = render.text(f"netdist at {address}", style="bold")
    header.append(f"   {time.strftime('%H:%M:%S', time.localtime(now))}", style="dim")
    if error:
        header.append("\n")
        header.append_text(render.text(error, style="red"))
    return Group(
        header,
        _handlers(handlers),
        _workers(workers, now=now),
        Text("Ctrl-C to quit", style="dim"),
    )


def _handlers(handlers: Sequence[admin_pb2.HandlerInfo]) -> Table:
    table = Table(title="Handlers", title_justify="left", expand=True)
    table.add_column("Job", overflow="fold", ratio=2)
    table.add_column("State")
    table.add_column("Progress", no_wrap=True)
    table.add_column("Done", justify="right", no_wrap=True)
    table.add_column("Avail", justify="right")
    table.add_column("Pending", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Summary / message", overflow="fold", ratio=3)
    for h in handlers:
        render.add_row(
            table,
            render.text(h.job_name)
            .append("\n")
            .append_text(render.text(f"{render.short_id(h.id)} {h.package}/{h.handler}", style="dim")),
            render.handler_state(h),
            render.handler_bar(h, width=24),
            render.progress_text(h),
            str(h.jobs_available),
            str(h.jobs_pending),
            Text(str(h.jobs_failed), style="red" if h.jobs_failed else ""),
            render.summary_text(h),
        )
    if not handlers:
        render.add_row(table, Text("no handlers: netdist-admin jobs add SCRIPT.py", style="dim"))
    return table


def _workers(workers: Sequence[admin_pb2.WorkerInfo], *, now: float) -> Table:
    table = Table(title="Workers", title_justify="left", expand=True)
    table.add_column("Name", overflow="fold")
    table.add_column("Slots", justify="right")
    table.add_column("Done", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Seen")
    table.add_column("Running jobs", overflow="fold", ratio=3)
    for w in workers:
        if not w.connected:
            continue
        running = Text()
        for j in w.running:
            if running:
                running.append("\n")
            running.append_text(render.text(f"#{j.id} {render.short_id(j.handler_id)} "))
            running.append(f"{j.progress_percent:3.0f}%", style="cyan")
            if j.progress_text:
                running.append_text(render.text(f" {j.progress_text}", style="dim"))
        render.add_row(
            table,
            w.name,
            f"{w.jobs_running}/{w.slots}",
            str(w.jobs_done),
            Text(str(w.jobs_failed), style="red" if w.jobs_failed else ""),
            render.fmt_ago(w.last_seen, now=now),
            running or Text("idle", style="dim"),
        )
    if not any(w.connected for w in workers):
        render.add_row(
            table,
            Text("no worker connected: netdist-worker connect HOST:PORT", style="dim"),
        )
    return table


def run(client: AdminClient, *, interval_seconds: float, console: Console) -> None:
    """Poll and redraw until interrupted. The first poll must succeed; later
    failures show in the header while the last good data stays on screen."""
    handlers = client.list_handlers()
    workers = client.list_workers()
    frame = build(handlers, workers, address=client.address)
    with Live(frame, console=console, auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(interval_seconds)
            error = ""
            try:
                handlers = client.list_handlers()
                workers = client.list_workers()
            except NetDistError as exc:
                error = f"{type(exc).__name__}: {exc.message} (retrying)"
            live.update(
                build(handlers, workers, address=client.address, error=error),
                refresh=True,
            )
