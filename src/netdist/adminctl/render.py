"""Rich renderables for the admin CLI: one function per view.

Functions take protobuf messages and return renderables; nothing here prints
or talks to the server, so the tables are tested without one. Every string
from the server reaches a renderable through :func:`add_row` or :func:`text`,
which make it printable (see :mod:`netdist.printable`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from netdist.api.v1 import admin_pb2, packages_pb2
from netdist.printable import printable, printable_lines

STATE_STYLES = {
    "running": "green",
    "idle": "cyan",
    "paused": "yellow",
    "stopped": "dim",
    "disabled": "dim",
    "finished": "bold green",
    "failed": "bold red",
}
LEVEL_STYLES = {
    "DEBUG": "dim",
    "INFO": "",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold red",
}


def add_row(table: Table, *cells: str | RenderableType) -> None:
    """Add a row; plain strings are made printable and never read as rich markup
    (a job named ``calc [x]`` must not lose its brackets, nor ``a\\nb`` forge a row)."""
    table.add_row(*(text(c) if isinstance(c, str) else c for c in cells))


def text(value: str, style: str = "") -> Text:
    """Server text as one printable line; build every :class:`Text` holding server data with this."""
    return Text(printable(value), style=style)


def fmt_time(seconds: float) -> str:
    """Unix seconds as local time; ``-`` when unset (0)."""
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def fmt_ago(seconds: float, *, now: float | None = None) -> str:
    """How long ago, e.g. ``3s ago``, ``5m ago``; ``-`` when unset."""
    if not seconds:
        return "-"
    delta = max(0.0, (time.time() if now is None else now) - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def fmt_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def short_id(ident: str) -> str:
    """The first 8 characters: enough for a unique prefix, which every REF accepts."""
    return ident[:8]


def state_text(state: str) -> Text:
    return text(state or "-", style=STATE_STYLES.get(state, ""))


def handler_state(h: admin_pb2.HandlerInfo) -> Text:
    """A handler's state as the server labels it (``finished, 3 of 10 jobs failed``): a finished handler
    with jobs that failed for good in yellow, in red when every job failed."""
    if h.state == "finished" and h.jobs_failed:
        return text(h.state_label or h.state, style="bold red" if h.jobs_processed == 0 else "bold yellow")
    return state_text(h.state)


def progress_text(h: admin_pb2.HandlerInfo) -> str:
    """``processed/total (pct%)`` or just the processed count when the total is unknown."""
    if h.has_total and h.jobs_total > 0:
        return f"{h.jobs_processed}/{h.jobs_total} ({100 * h.jobs_processed / h.jobs_total:.0f}%)"
    return str(h.jobs_processed)


def handlers_table(handlers: Iterable[admin_pb2.HandlerInfo]) -> Table:
    table = Table(title="Handlers", title_justify="left")
    for name in ("ID", "Job", "Package", "Handler", "State"):
        table.add_column(name, overflow="fold")
    for name in ("Progress", "Avail", "Pending", "Failed"):
        table.add_column(name, justify="right")
    table.add_column("Summary / message", overflow="fold")
    for h in handlers:
        add_row(
            table,
            short_id(h.id),
            h.job_name,
            f"{h.package} {h.package_version}".strip(),
            h.handler,
            handler_state(h),
            progress_text(h),
            str(h.jobs_available),
            str(h.jobs_pending),
            Text(str(h.jobs_failed), style="red" if h.jobs_failed else ""),
            summary_text(h),
        )
    return table


def summary_text(h: admin_pb2.HandlerInfo) -> Text:
    """The handler's summary, its message, and why its available jobs wait (``waiting: ...``)."""
    summary = text(h.result_summary)
    for line in (
        text(h.message, style="red" if h.state == "failed" else "italic") if h.message else None,
        text(f"waiting: {h.waiting}", style="yellow") if h.waiting else None,
    ):
        if line is not None:
            if summary:
                summary.append("\n")
            summary.append_text(line)
    return summary


def workers_table(workers: Iterable[admin_pb2.WorkerInfo]) -> Table:
    table = Table(title="Workers", title_justify="left")
    for name in ("ID", "Name", "Host", "Connected"):
        table.add_column(name, overflow="fold")
    for name in ("Slots", "Running", "Done", "Failed"):
        table.add_column(name, justify="right")
    table.add_column("Last seen")
    table.add_column("Labels", overflow="fold")
    table.add_column("Platform", overflow="fold")
    for w in workers:
        add_row(
            table,
            short_id(w.id),
            w.name,
            w.hostname,
            _connected(w),
            str(w.slots),
            str(w.jobs_running),
            str(w.jobs_done),
            Text(str(w.jobs_failed), style="red" if w.jobs_failed else ""),
            fmt_ago(w.last_seen),
            ", ".join(f"{k}={v}" for k, v in sorted(w.labels.items())),
            _platform(w),
        )
    return table


def _platform(w: admin_pb2.WorkerInfo) -> Text:
    """Its platform, and the handlers whose dependencies have no wheels for it."""
    cell = Text(printable(w.platform or "-"))
    if w.unservable_handlers:
        cell.append(printable(f" (cannot serve {', '.join(w.unservable_handlers)})"), style="red")
    return cell


def _connected(w: admin_pb2.WorkerInfo) -> Text:
    if w.disabled:
        return Text("disabled", style="red")
    return Text("yes", style="green") if w.connected else Text("no", style="dim")


def packages_table(packages: Iterable[packages_pb2.PackageInfo]) -> Table:
    table = Table(title="Packages", title_justify="left")
    for name in (
        "Name",
        "Version",
        "Current",
        "Handlers",
        "Wheel",
        "Dependencies",
        "Uploaded",
        "By",
    ):
        table.add_column(name, overflow="fold")
    for p in packages:
        add_row(
            table,
            p.name,
            p.version,
            "yes" if p.current else "",
            ", ".join(p.handlers) or "-",
            f"{p.wheel.filename} ({fmt_size(p.wheel.size)})",
            Text("\n".join(printable(d.filename) for d in p.dependencies) or "-"),
            fmt_time(p.uploaded_at),
            p.uploaded_by or "-",
        )
    return table


def status_table(s: admin_pb2.GetStatusResponse) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in (
        ("server", f"netdist {s.version} at {s.address}"),
        ("database", s.database),
        ("up since", fmt_time(s.started_at)),
        ("packages", str(s.packages)),
        ("handlers", handlers_line(s)),
        ("workers", workers_line(s)),
        (
            "jobs",
            f"{s.jobs_available} available, {s.jobs_pending} pending, "
            f"{s.jobs_processed} processed, {s.jobs_failed} failed",
        ),
    ):
        add_row(grid, key, value)
    if s.store_state not in ("", "ok"):
        add_row(
            grid,
            "store",
            text(f"{s.store_state} since {fmt_time(s.store_unavailable_since)}: {s.store_problem}", style="red"),
        )
    return grid


def workers_line(s: admin_pb2.GetStatusResponse) -> str:
    line = f"{s.workers_connected} connected"
    if s.heartbeat_interval_seconds > 0:  # 0: a server from before the interval was shown
        line += f", heartbeat every {s.heartbeat_interval_seconds:g} s"
    return line


def handlers_line(s: admin_pb2.GetStatusResponse) -> Text:
    line = text(f"{s.handlers} ({s.handlers_running} running")
    if s.handlers_finished_with_failures:
        line.append(f", {s.handlers_finished_with_failures} finished with failed jobs", style="bold yellow")
    return line.append(")")


LOG_INDENT = "    "
"""Before each further line of a log message: only an entry's first line starts at the margin, so a message
cannot pass a line of its own off as another entry."""


def log_line(line: admin_pb2.LogLine) -> Text:
    """One log entry; a message of several lines (a traceback) keeps its lines, each made printable and
    indented by :data:`LOG_INDENT`."""
    out = Text(f"{fmt_time(line.at)} ", style="dim")
    out.append(printable(f"{line.level:<7} "), style=LEVEL_STYLES.get(line.level.upper(), ""))
    source = f"job {line.job_id} attempt {line.attempt}" if line.job_id else line.source
    out.append(printable(f"{source}: "), style="dim")
    out.append(printable_lines(line.message).replace("\n", "\n" + LOG_INDENT))
    return out


def handler_bar(h: admin_pb2.HandlerInfo, *, width: int = 30) -> RenderableType:
    """A progress bar when the total is known, a pulsing bar while running without one."""
    if h.has_total and h.jobs_total > 0:
        return ProgressBar(total=h.jobs_total, completed=h.jobs_processed, width=width)
    if h.state == "running":
        return ProgressBar(total=None, width=width)
    return Text("")


def audit_table(entries: Iterable[admin_pb2.AuditEntry]) -> Table:
    table = Table(title="Audit (newest first)", title_justify="left")
    for name in ("When", "Token", "Role", "Peer", "Call", "Target", "Outcome", "Detail"):
        table.add_column(name, overflow="fold")
    for e in entries:
        add_row(
            table,
            fmt_time(e.at),
            e.token_name or "-",
            e.role or "-",
            e.peer,
            e.method,
            e.target,
            text(e.outcome, style="green" if e.outcome == "ok" else "red"),
            e.detail,
        )
    return table
