"""Rich renderables for one job whole (``jobs show``); the jobs table is render.jobs_table."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from netdist.adminctl.printable import printable_lines
from netdist.adminctl.render import add_row, error_line, fmt_time, short_id, text
from netdist.api.v1 import admin_pb2

_OUTCOME_STYLES = {"succeeded": "green", "running": "cyan", "errored": "red", "failed": "red"}


def attempt_block(a: admin_pb2.JobAttempt) -> RenderableType:
    head = Text(f"attempt {a.attempt}: ", style="bold")
    head.append_text(text(a.outcome, style=_OUTCOME_STYLES.get(a.outcome, "yellow")))
    if not a.charged:
        head.append(" (not charged)", style="dim")
    head.append_text(text(f" on {a.worker_name or short_id(a.worker_id) or '-'}"))
    head.append(f", started {fmt_time(a.started_at)}")
    if a.finished_at:
        head.append(f", ended {fmt_time(a.finished_at)}")
    if a.has_duration:
        head.append(f", ran {a.duration_seconds:.3f}s")
    lines: list[RenderableType] = [head]
    if a.HasField("error"):
        lines.append(Text("  ") + text(error_line(a.error), style="red"))
        if a.error.traceback:
            lines.append(_quoted(a.error.traceback.rstrip()))
    return Group(*lines)


def _quoted(block: str) -> Text:
    """Text of several lines (a traceback) behind a gutter: each line printable, none passing for a line
    of the view's own."""
    out = Text()
    for n, line in enumerate(printable_lines(block).split("\n")):
        out.append(("\n" if n else "") + "    ┆ ", style="dim")
        out.append(line)
    return out


def job_detail(job: admin_pb2.GetJobResponse) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("job", str(job.id)),
        ("handler", f"{job.job_name} ({job.handler_id})" if job.job_name else job.handler_id),
        ("script", job.script_name or "-"),
        ("status", job.status),
        ("attempts", str(job.attempts)),
        ("progress", _progress(job)),
        ("input", _document(job.input_json, job.input_clipped)),
        ("output", _document(job.output_json, job.output_clipped)),
        ("extra", _document(job.extra_json, False)),
    ]
    for key, value in rows:
        add_row(grid, key, value)
    blocks: list[RenderableType] = [grid, Text("\nattempts", style="bold")]
    if job.attempts_not_shown:
        blocks.append(Text(f"({job.attempts_not_shown} older attempts not shown)", style="dim"))
    blocks += [attempt_block(a) for a in job.attempt_history] or [Text("none yet", style="dim")]
    return Group(*blocks)


def _document(raw: str, clipped: bool) -> Text:
    if not raw:
        return Text("-")
    shown = text(raw)
    if clipped:
        shown.append(" … (clipped)", style="dim")
    return shown


def _progress(job: admin_pb2.GetJobResponse) -> str:
    """As ``jobs list`` shows it: a running job's percent and text, 100% once it succeeded, else ``-``."""
    if job.status == "leased":
        return f"{job.progress_percent:.0f}% {job.progress_text}".strip()
    return "100%" if job.status in ("succeeded", "processed") else "-"
