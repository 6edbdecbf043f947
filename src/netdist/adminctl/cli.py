"""``netdist-admin``: upload packages and job scripts, control handlers, watch.

One click group per resource. Errors cross one boundary (:class:`_AdminGroup`)
that prints ``ErrorName: message`` in red on stderr and exits with an
:class:`~netdist.exit_codes.ExitCode`: 1 the server said no, 2 usage, 3 the
server cannot be reached, 130 Ctrl-C; no traceback reaches the operator.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console, RenderableType

from netdist import __version__
from netdist.adminctl import dashboard, render, view
from netdist.adminctl.client import AdminClient
from netdist.adminctl.printable import printable
from netdist.api.v1 import admin_pb2
from netdist.channel import ClientSecurity
from netdist.cli_boundary import OneLineGroup, say
from netdist.errors import (
    CertificateError,
    NetDistError,
    TokenFileError,
    UnavailableError,
)
from netdist.exit_codes import ExitCode
from netdist.token_file import find_token

DEFAULT_SERVER = "127.0.0.1:50051"
_PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

ACTIONS: dict[str, tuple[admin_pb2.HandlerAction.ValueType, str]] = {
    "start": (admin_pb2.HANDLER_ACTION_START, "started"),
    "stop": (admin_pb2.HANDLER_ACTION_STOP, "stopped"),
    "pause": (admin_pb2.HANDLER_ACTION_PAUSE, "paused"),
    "enable": (admin_pb2.HANDLER_ACTION_ENABLE, "enabled"),
    "disable": (admin_pb2.HANDLER_ACTION_DISABLE, "disabled"),
    "remove": (admin_pb2.HANDLER_ACTION_REMOVE, "removed"),
}


def _out() -> Console:
    # Built per call: click's test runner swaps sys.stdout while a command runs.
    return Console(highlight=False)


def _fail(exc: NetDistError) -> ExitCode:
    say(printable(f"{type(exc).__name__}: {exc.message}"))  # the server's text: control characters shown escaped
    return ExitCode.UNAVAILABLE if isinstance(exc, UnavailableError) else ExitCode.FAILED


class _AdminGroup(OneLineGroup):
    """The error boundary: every command runs inside :meth:`invoke`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NetDistError as exc:
            ctx.exit(_fail(exc))
        except KeyboardInterrupt:
            ctx.exit(ExitCode.INTERRUPTED)


def _check_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return value


def _client(ctx: click.Context) -> AdminClient:
    client = ctx.find_object(AdminClient)
    assert client is not None  # set by main()
    return client


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _show(renderable: RenderableType) -> None:
    _out().print(renderable)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")


@click.group(cls=_AdminGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    default=DEFAULT_SERVER,
    show_default=True,
    envvar="NETDIST_SERVER",
    show_envvar=True,
    callback=_check_address,
    metavar="HOST:PORT",
    help="Address of the netdist server.",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    envvar="NETDIST_TIMEOUT",
    show_envvar=True,
    help="Seconds to wait for each answer.",
)
@click.option(
    "--tls",
    is_flag=True,
    envvar="NETDIST_TLS",
    show_envvar=True,
    help="Speak TLS, trusting the system's roots (implied by the --tls-* options).",
)
@click.option(
    "--tls-ca",
    type=_PEM_FILE,
    default=None,
    envvar="NETDIST_TLS_CA",
    show_envvar=True,
    help="Speak TLS, trusting these roots (PEM): the server's ca.crt from `tls init`.",
)
@click.option(
    "--tls-cert",
    type=_PEM_FILE,
    default=None,
    envvar="NETDIST_ADMIN_TLS_CERT",
    show_envvar=True,
    help="This client's certificate (PEM), for a server that requires one (mutual TLS).",
)
@click.option(
    "--tls-key",
    type=_PEM_FILE,
    default=None,
    envvar="NETDIST_ADMIN_TLS_KEY",
    show_envvar=True,
    help="The private key of --tls-cert (PEM, unencrypted).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="NETDIST_TOKEN_FILE",
    show_envvar=True,
    help="File holding the token to present (or the token itself in NETDIST_TOKEN;"
    " default: admin.token in NETDIST_DATA_DIR or ./netdist-data, if there).",
)
@click.version_option(__version__, prog_name="netdist-admin")
@click.pass_context
def main(
    ctx: click.Context,
    server: str,
    timeout_seconds: float,
    tls: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    token_file: Path | None,
) -> None:
    """Administer a netdist server: packages, job scripts, handlers, workers."""
    try:
        token = find_token(token_file=token_file, env=os.environ, variable="NETDIST_TOKEN", default_name="admin.token")
    except TokenFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--token-file") from None
    security = ClientSecurity(token=token.value, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    try:
        security.check()
    except CertificateError as exc:
        raise click.UsageError(exc.message) from None
    ctx.obj = ctx.with_resource(
        AdminClient(server, timeout_seconds=timeout_seconds, security=security, token_source=token.source)
    )


# -- status, upload-package, watch -------------------------------------------


@main.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the server's version, database and totals."""
    reply = _client(ctx).status()
    if as_json:
        _emit_json(view.status_dict(reply))
    else:
        _show(render.status_table(reply))


def _wheel_path(ctx: click.Context, param: click.Parameter, value: Sequence[Path]) -> Sequence[Path]:
    for path in value:
        if path.suffix != ".whl":
            raise click.BadParameter(f"{path} is not a wheel (.whl)", ctx=ctx, param=param)
    return value


_wheel_type = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@main.command("upload-package")
@click.argument("package", type=_wheel_type, callback=lambda c, p, v: _wheel_path(c, p, [v])[0])
@click.argument("dependencies", nargs=-1, type=_wheel_type, callback=_wheel_path)
@click.pass_context
def upload_package(ctx: click.Context, package: Path, dependencies: tuple[Path, ...]) -> None:
    """Upload PACKAGE (a wheel with handlers) and the wheels it DEPENDS on.

    Workers get all of them on sys.path when they run a job of this package.
    Handler instances of an older version move to the new one.
    """
    reply = _client(ctx).upload([package, *dependencies])
    p = reply.package
    out = _out()
    verb = "uploaded" if reply.created else "already present:"
    out.print(render.text(f"{verb} {p.name} {p.version}", style="bold"))
    out.print(render.text(f"  handlers: {', '.join(p.handlers) or '-'}"))
    if p.dependencies:
        out.print(render.text(f"  dependencies: {', '.join(d.filename for d in p.dependencies)}"))
    if reply.restarted_handlers:
        out.print(render.text(f"  restarted handlers: {', '.join(reply.restarted_handlers)}"))


@main.command()
@click.option(
    "--interval",
    "interval_seconds",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.pass_context
def watch(ctx: click.Context, interval_seconds: float) -> None:
    """A live dashboard of handlers and workers (Ctrl-C to quit)."""
    dashboard.run(_client(ctx), interval_seconds=interval_seconds, console=_out())


# -- packages -----------------------------------------------------------------


@main.group()
def packages() -> None:
    """Uploaded packages (wheels holding handlers)."""


@packages.command("list")
@click.option(
    "--all",
    "all_versions",
    is_flag=True,
    help="Every stored version, not only the current one.",
)
@json_option
@click.pass_context
def packages_list(ctx: click.Context, all_versions: bool, as_json: bool) -> None:
    """List packages."""
    items = _client(ctx).list_packages(all_versions=all_versions)
    if as_json:
        _emit_json([view.package_dict(p) for p in items])
    else:
        _show(render.packages_table(items))


@packages.command("remove")
@click.argument("name")
@click.option("--version", default="", help="Remove only this version (default: every version).")
@click.pass_context
def packages_remove(ctx: click.Context, name: str, version: str) -> None:
    """Remove package NAME (every version unless --version)."""
    removed = _client(ctx).remove_package(name, version)
    click.echo(f"removed {removed} version{'s' if removed != 1 else ''} of {printable(name)}")


# -- jobs ---------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """Job scripts and the jobs of handlers."""


@jobs.command("add")
@click.argument(
    "script",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
)
@click.pass_context
def jobs_add(ctx: click.Context, script: Path) -> None:
    """Upload a job SCRIPT: creates or updates one handler instance."""
    reply = _client(ctx).add_job_script(script)
    h = reply.handler
    text = render.text(f"{reply.outcome}: ", style="bold")
    text.append(printable(f"handler {h.id} ('{h.job_name}': {h.package}/{h.handler}), state "))
    text.append_text(render.state_text(h.state))
    _out().print(text)


@jobs.command("list")
@click.option(
    "--handler",
    "handler_ref",
    default="",
    metavar="REF",
    help="Only jobs of this handler.",
)
@click.option(
    "--status",
    default="",
    metavar="S",
    help="Only jobs with this status: available, leased, succeeded, errored, processed or failed (default: leased, the running jobs).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many (0: no limit).",
)
@json_option
@click.pass_context
def jobs_list(ctx: click.Context, handler_ref: str, status: str, limit: int, as_json: bool) -> None:
    """List jobs: by default the running ones, with their progress."""
    items = _client(ctx).list_jobs(handler_ref=handler_ref, status=status, limit=limit)
    if as_json:
        _emit_json([view.job_dict(j) for j in items])
    else:
        _show(render.jobs_table(items))


# -- handlers -----------------------------------------------------------------


@main.group()
def handlers() -> None:
    """Handler instances (one per job script). REF is an id, a unique id prefix, or a job name."""


@handlers.command("list")
@json_option
@click.pass_context
def handlers_list(ctx: click.Context, as_json: bool) -> None:
    """List handler instances with their progress."""
    items = _client(ctx).list_handlers()
    if as_json:
        _emit_json([view.handler_dict(h) for h in items])
    else:
        _show(render.handlers_table(items))


@handlers.command("show")
@click.argument("ref")
@json_option
@click.pass_context
def handlers_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show every detail of one handler instance, settings included."""
    h = _client(ctx).get_handler(ref)
    if as_json:
        _emit_json(view.handler_dict(h))
    else:
        _show(render.handler_detail(h))


def _control_command(name: str) -> Callable[..., None]:
    action, done = ACTIONS[name]

    @click.argument("ref")
    @click.pass_context
    def command(ctx: click.Context, ref: str) -> None:
        h = _client(ctx).control_handler(ref, action)
        text = render.text(f"{done} handler {h.id or ref}")
        if h.job_name:
            text.append(printable(f" ('{h.job_name}')"))
        if name != "remove":
            text.append(", state ")
            text.append_text(render.state_text(h.state))
        _out().print(text)

    command.__doc__ = f"{name.capitalize()} handler REF."
    return command


for _name in ACTIONS:
    handlers.command(_name)(_control_command(_name))


@handlers.command("log")
@click.argument("ref")
@click.option(
    "-n",
    "--lines",
    "tail",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show the last N lines (0: all kept).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.pass_context
def handlers_log(ctx: click.Context, ref: str, tail: int, follow: bool) -> None:
    """Print the log of handler REF (its own log and the server's notes on it)."""
    out = _out()
    for line in _client(ctx).handler_log(ref, tail=tail, follow=follow):
        out.print(render.log_line(line), soft_wrap=True)


# -- audit ------------------------------------------------------------------


_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_SPAN_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    """A span back from now (``30m``, ``2h``, ``7d``) or a date/time (``2026-12-01``, ISO 8601)."""
    if not value:
        return 0.0
    span = _SPAN.match(value.strip())
    if span:
        return time.time() - float(span.group(1)) * _SPAN_SECONDS[span.group(2)]
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected a span such as 30m, 2h or 7d, or a date/time such as 2026-12-01T08:00, got {value!r}"
        ) from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


@main.command()
@click.option(
    "--since",
    callback=_since,
    metavar="SPAN|TIME",
    help="Only entries since then: 30m, 2h, 7d back from now, or a date/time (ISO 8601, local time).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="At most this many entries, newest first.",
)
@json_option
@click.pass_context
def audit(ctx: click.Context, since: float, limit: int, as_json: bool) -> None:
    """Who changed what, when, from where, and how it ended (newest first)."""
    entries = _client(ctx).list_audit(since=since, limit=limit)
    if as_json:
        _emit_json([view.audit_dict(e) for e in entries])
    else:
        _show(render.audit_table(entries))


# -- workers ------------------------------------------------------------------


@main.group()
def workers() -> None:
    """Workers known to the server. REF is an id or a name."""


@workers.command("list")
@json_option
@click.pass_context
def workers_list(ctx: click.Context, as_json: bool) -> None:
    """List workers, connected or not."""
    items = _client(ctx).list_workers()
    if as_json:
        _emit_json([view.worker_dict(w) for w in items])
    else:
        _show(render.workers_table(items))


@workers.command("remove")
@click.argument("ref")
@click.pass_context
def workers_remove(ctx: click.Context, ref: str) -> None:
    """Forget worker REF; its leased jobs go back to the queue."""
    reply = _client(ctx).remove_worker(ref)
    n = reply.leases_returned
    click.echo(f"removed worker {printable(ref)}; {n} job{'s' if n != 1 else ''} returned to the queue")


@workers.command("disable")
@click.argument("ref")
@click.pass_context
def workers_disable(ctx: click.Context, ref: str) -> None:
    """Disconnect worker REF and refuse it until enabled; its jobs go back to the queue."""
    n = _client(ctx).disable_worker(ref).leases_returned
    click.echo(f"disabled worker {printable(ref)}; {n} job{'s' if n != 1 else ''} returned to the queue")


@workers.command("enable")
@click.argument("ref")
@click.pass_context
def workers_enable(ctx: click.Context, ref: str) -> None:
    """Let worker REF connect again."""
    _client(ctx).enable_worker(ref)
    click.echo(f"enabled worker {printable(ref)}")
