"""Rich renderables for jobs: the ``jobs list`` table, one line a job, and one job whole (``jobs show``)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from netdist.adminctl.render import add_row, fmt_time, short_id, text
from netdist.api.v1 import admin_pb2
from netdist.printable import printable, printable_lines

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


_DONE = ("succeeded", "processed")
INPUT_WIDTH = 24
RESULT_WIDTH = 48


def clip(value: str, width: int) -> str:
    """One printable line of at most ``width`` characters."""
    line = printable(value)
    return line if len(line) <= width else line[: width - 1] + "…"


def _one_line(value: str, style: str = "") -> Text:
    """A cell that never wraps: cut with an ellipsis to the width its column gets."""
    return Text(value, style=style, no_wrap=True, overflow="ellipsis")


def error_line(error: admin_pb2.JobErrorInfo) -> str:
    """``Type: message``, the message's first line."""
    message = error.message.strip().split("\n", 1)[0]
    return f"{error.type}: {message}" if message else error.type


def progress(j: admin_pb2.JobInfo) -> str:
    """The running job's percent and text; 100% once it succeeded; blank otherwise."""
    if j.status == "leased":
        return f"{j.progress_percent:.0f}% {j.progress_text}".strip()
    return "100%" if j.status in _DONE else ""


def jobs_table(jobs: Iterable[admin_pb2.JobInfo]) -> Table:
    table = Table(title="Jobs", title_justify="left")
    table.add_column("Job", justify="right", no_wrap=True)
    table.add_column("Handler", overflow="fold", min_width=8)
    table.add_column("Status", no_wrap=True)
    table.add_column("Try", justify="right", no_wrap=True)
    table.add_column("Worker", overflow="fold", min_width=6)
    table.add_column("Progress", overflow="fold", min_width=4)
    # One line each, clipped to what the terminal leaves them: the whole job is in ``jobs show``.
    table.add_column("Input", max_width=INPUT_WIDTH, min_width=8)
    table.add_column("Output / error", max_width=RESULT_WIDTH, min_width=16)
    for j in jobs:
        if j.HasField("error_info") and j.status != "leased":
            result = _one_line(clip(error_line(j.error_info), RESULT_WIDTH), style="red")
        else:
            result = _one_line(clip(j.output_json, RESULT_WIDTH))
        add_row(
            table,
            str(j.id),
            j.job_name or short_id(j.handler_id),
            j.status,
            str(j.attempts),
            j.worker_name or short_id(j.worker_id) or "-",
            progress(j) or "-",
            _one_line(clip(j.input_json, INPUT_WIDTH)),
            result,
        )
    return table
