"""``netdist-admin``: upload packages and job scripts, control handlers, watch.

This module is the root group: the connection options (server, timeout, TLS,
token) that open the :class:`~netdist.adminctl.client.AdminClient` each
command uses, and the one boundary errors cross (:class:`_AdminGroup`), which
prints ``ErrorName: message`` in red on stderr and exits with an
:class:`~netdist.exit_codes.ExitCode`: 1 the server said no, 2 usage, 3 the
server cannot be reached, 130 Ctrl-C; no traceback reaches the operator.

The commands, one click group per resource, live in modules named for it:

    server_commands.py   status, watch, audit
    event_commands.py    events
    package_commands.py  upload-package, packages
    handler_commands.py  jobs, handlers
    worker_commands.py   workers
    command_io.py        what they share: the client, the console, --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from netdist import __version__
from netdist.adminctl.connect import DEFAULT_SERVER, open_client
from netdist.adminctl.event_commands import events
from netdist.adminctl.handler_commands import handlers, jobs
from netdist.adminctl.package_commands import packages, upload_package
from netdist.adminctl.server_commands import audit, status, watch
from netdist.adminctl.worker_commands import workers
from netdist.cli_boundary import OneLineGroup, say, server_address
from netdist.client_tls_options import client_tls_options
from netdist.errors import (
    NetDistError,
    UnavailableError,
)
from netdist.exit_codes import ExitCode
from netdist.printable import printable


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
    return server_address(value)


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
@client_tls_options(
    tls_env="NETDIST_TLS",
    ca_env=("NETDIST_TLS_CA",),
    cert_env="NETDIST_ADMIN_TLS_CERT",
    key_env="NETDIST_ADMIN_TLS_KEY",
    who="client",
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
    ctx.obj = ctx.with_resource(
        open_client(
            server=server,
            timeout_seconds=timeout_seconds,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            token_file=token_file,
        )
    )


# In the order they always were (click lists them sorted in --help either way).
for _command in (status, upload_package, watch, packages, jobs, handlers, audit, workers, events):
    main.add_command(_command)
