"""``netdist-admin jobs`` and ``handlers``: job scripts, the handler instances they make, their jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from netdist.adminctl import deps_view, handler_render, job_render, render, view
from netdist.adminctl.command_io import client, emit_json, json_option, out, show
from netdist.adminctl.completion import handler_names
from netdist.api.v1 import admin_pb2
from netdist.cli_boundary import IntRange, say
from netdist.exit_codes import ExitCode
from netdist.printable import printable

JOB_STATUSES = ("available", "leased", "succeeded", "errored", "processed", "failed")
"""A job's states as the server stores them (netdist.server.states.JobStatus; a test keeps the two equal)."""

ACTIONS: dict[str, tuple[admin_pb2.HandlerAction.ValueType, str, str]] = {
    "start": (admin_pb2.HANDLER_ACTION_START, "started", "Start handler REF, or resume it: it hands out jobs."),
    "stop": (
        admin_pb2.HANDLER_ACTION_STOP,
        "stopped",
        "Stop handler REF: it hands out nothing, and its leased jobs are taken back from the workers, "
        "running ones too (not charged as attempts). `start` goes on from where it stopped.",
    ),
    "pause": (
        admin_pb2.HANDLER_ACTION_PAUSE,
        "paused",
        "Pause handler REF: it hands out nothing, and its leased jobs finish. `start` resumes it.",
    ),
    "enable": (
        admin_pb2.HANDLER_ACTION_ENABLE,
        "enabled",
        "Enable handler REF: it may start again (by hand, schedule or auto-start); a failed one's error is cleared.",
    ),
    "disable": (
        admin_pb2.HANDLER_ACTION_DISABLE,
        "disabled",
        "Disable handler REF: it does not start, by hand, schedule or auto-start, until enabled.",
    ),
    "remove": (admin_pb2.HANDLER_ACTION_REMOVE, "removed", "Remove handler REF and its jobs."),
}


# -- jobs ---------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Job scripts and the jobs of handlers."""


@jobs.command("add")
@click.argument(
    "script",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
)
@click.option(
    "--lock",
    "lock_file",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    default=None,
    help="A pinned lock (name==version lines, --hash=sha256: optional, as `uv pip compile` or `pip freeze` "
    "write) the script's dependencies must resolve to; kept for later uploads of the script.",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Resolve the script's dependencies again though nothing changed (drops a kept pinned lock).",
)
@click.pass_context
def jobs_add(ctx: click.Context, script: Path, lock_file: Path | None, refresh: bool) -> None:
    """Upload a job SCRIPT: creates or updates one handler instance.

    The server resolves the script's PEP 723 `dependencies` into wheels (may take a while)."""
    lock = lock_file.read_text(encoding="utf-8", errors="replace") if lock_file is not None else None
    reply = client(ctx).add_job_script(script, lock=lock, refresh=refresh)
    h = reply.handler
    text = render.text(f"{reply.outcome}: ", style="bold")
    text.append(printable(f"handler {h.id} ('{h.job_name}': {h.package}/{h.handler}), state "))
    text.append_text(render.handler_state(h))
    if h.state == "failed" and h.message:  # its auto-start, or the move to the new script, failed: say why
        text.append(printable(f": {h.message}"))
    out().print(text)


@jobs.command("deps")
@click.argument("ref", shell_complete=handler_names)
@json_option
@click.pass_context
def jobs_deps(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show the dependency lock of handler REF: the exact wheels per worker platform."""
    reply = client(ctx).job_script_deps(ref)
    if as_json:
        emit_json(deps_view.deps_dict(reply))
    else:
        show(deps_view.deps_detail(reply))


@jobs.command("list")
@click.option(
    "--handler",
    "handler_ref",
    default="",
    metavar="REF",
    shell_complete=handler_names,
    help="Only jobs of this handler.",
)
@click.option(
    "--status",
    type=click.Choice(JOB_STATUSES),
    default=None,
    help="Only jobs with this status (default: leased, the running jobs).",
)
@click.option(
    "--limit",
    type=IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many (0: no limit).",
)
@json_option
@click.pass_context
def jobs_list(ctx: click.Context, handler_ref: str, status: str | None, limit: int, as_json: bool) -> None:
    """List jobs: by default the running ones, with their progress."""
    items = client(ctx).list_jobs(handler_ref=handler_ref, status=status or "", limit=limit)
    if as_json:
        emit_json([view.job_dict(j) for j in items])
    else:
        show(job_render.jobs_table(items))


@jobs.command("log")
@click.argument("job_id", metavar="ID", type=IntRange(min=1))
@click.option(
    "-n",
    "--lines",
    "tail",
    type=IntRange(min=0),
    default=0,
    show_default=True,
    help="Show the last N lines (0: all kept).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends (or Ctrl-C).")
@click.pass_context
def jobs_log(ctx: click.Context, job_id: int, tail: int, follow: bool) -> None:
    """Print what job ID logged (ctx.log), every attempt: time, level, attempt, line."""
    console = out()
    for line in client(ctx).job_log(job_id, tail=tail, follow=follow):
        console.print(render.log_line(line), soft_wrap=True)


@jobs.command("show")
@click.argument("job_id", metavar="ID", type=IntRange(min=1))
@json_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """Show job ID whole: input, output, extra, status, progress, and every attempt with its worker and error."""
    job = client(ctx).get_job(job_id)
    if as_json:
        emit_json(view.job_detail_dict(job))
    else:
        show(job_render.job_detail(job))


# -- handlers -----------------------------------------------------------------


@click.group()
def handlers() -> None:
    """Handler instances (one per job script). REF is an id, a unique id prefix, or a job name."""


@handlers.command("list")
@json_option
@click.pass_context
def handlers_list(ctx: click.Context, as_json: bool) -> None:
    """List handler instances with their progress."""
    items = client(ctx).list_handlers(running=as_json)  # the table shows no running job
    if as_json:
        emit_json([view.handler_dict(h) for h in items])
    else:
        show(render.handlers_table(items))


@handlers.command("show")
@click.argument("ref", shell_complete=handler_names)
@json_option
@click.pass_context
def handlers_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show every detail of one handler instance, settings included."""
    h = client(ctx).get_handler(ref)
    if as_json:
        emit_json(view.handler_dict(h, with_result=True))
    else:
        show(handler_render.handler_detail(h))


@handlers.command("result")
@click.argument("ref", shell_complete=handler_names)
@json_option
@click.pass_context
def handlers_result(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Print the saved state (the handler's `self.state`) and summary of handler REF.

    The state is sent up to 256 KiB; past that only its size is (the handler keeps its answer too big
    to show: write it to a file or a database from the handler instead)."""
    h = client(ctx).get_handler(ref)
    if as_json:
        emit_json(view.result_dict(h))
    else:
        show(handler_render.handler_result(h))


def _control_command(name: str) -> Callable[..., None]:
    action, done, doc = ACTIONS[name]

    @click.argument("ref", shell_complete=handler_names)
    @click.pass_context
    def command(ctx: click.Context, ref: str) -> None:
        h = client(ctx).control_handler(ref, action)
        if name == "start" and h.state == "failed":  # initialize or on_start raised, or its host died
            why = f"handler {h.id} ('{h.job_name}') failed as it started, state failed: {h.message}"
            say(printable(f"HandlerFailedError: {why}"))
            ctx.exit(ExitCode.FAILED)
        text = render.text(f"{done} handler {h.id or ref}")
        if h.job_name:
            text.append(printable(f" ('{h.job_name}')"))
        if name != "remove":
            text.append(", state ")
            text.append_text(render.handler_state(h))
        out().print(text)

    command.__doc__ = doc
    return command


for _name in ACTIONS:
    handlers.command(_name)(_control_command(_name))


@handlers.command("log")
@click.argument("ref", shell_complete=handler_names)
@click.option(
    "-n",
    "--lines",
    "tail",
    type=IntRange(min=0),
    default=50,
    show_default=True,
    help="Show the last N lines (0: all kept).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--jobs", "with_jobs", is_flag=True, help="Interleave what its jobs logged (ctx.log), by time.")
@click.pass_context
def handlers_log(ctx: click.Context, ref: str, tail: int, follow: bool, with_jobs: bool) -> None:
    """Print the log of handler REF (its own log and the server's notes on it)."""
    console = out()
    for line in client(ctx).handler_log(ref, tail=tail, follow=follow, jobs=with_jobs):
        console.print(render.log_line(line), soft_wrap=True)
