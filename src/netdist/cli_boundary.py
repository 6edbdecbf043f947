"""The error boundary the three commands share: an expected failure is one red line and an exit code.

Every failure an operator can cause (a bad option, a missing file, a database
that cannot be opened, a server that says no) ends the command with one line
on stderr, ``ErrorName: message``, one line whatever the message holds (line
breaks as spaces, control characters dropped; netdist-admin shows a server's
text with visible escapes first, :mod:`netdist.printable`), and an
:class:`~netdist.exit_codes.ExitCode`; never a traceback. A traceback means a
bug. Click's own usage errors go through :class:`OneLineGroup`, the group
class of each command; the commands call :func:`fail` for the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from netdist.exit_codes import ExitCode
from netdist.fields import clean_text

MAX_LINE = 10_000
"""Characters of one error line at most (a driver's first line, a zip member's name: never near it)."""


def say(message: str) -> None:
    """One red line on stderr."""
    click.secho(clean_text(message, MAX_LINE), fg="red", err=True)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Say ``message`` and exit with ``code``."""
    say(message)
    sys.exit(code)


class OneLineGroup(click.Group):
    """A command group whose usage errors are one line too (click prints the usage and a hint before them)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help itself, asked for by giving no command
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            if isinstance(exc, click.BadParameter):
                _name_the_source(exc)
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            fail(f"UsageError: {exc.format_message().rstrip('.')}{hint}", ExitCode.USAGE)
        except click.ClickException as exc:  # click.FileError: a file named on the command line
            fail(f"{type(exc).__name__}: {exc.format_message()}", ExitCode.FAILED)
        except click.Abort:  # click's own KeyboardInterrupt
            sys.exit(ExitCode.INTERRUPTED)
        sys.exit(code if isinstance(code, int) else ExitCode.OK)  # ctx.exit(code) comes back as a return value


class IntRange(click.IntRange):
    """click's IntRange, named "integer": its refusal of ``abc`` says "'abc' is not a valid integer", not
    "... not a valid integer range", and help shows INTEGER with the range beside it."""

    name = "integer"


def _name_the_source(exc: click.BadParameter) -> None:
    """A bad option value is named where it came from: the option typed, or the variable set.

    Click names an option with an environment variable as ``'--server' (env var: 'NETDIST_SERVER')``
    wherever its value came from, which sends the operator to a variable that is not set."""
    param, ctx = exc.param, exc.ctx
    if exc.param_hint is not None or not isinstance(param, click.Option) or not param.envvar or ctx is None:
        return
    if param.name is not None and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        exc.param_hint = next((f"the environment variable {name}" for name in names if os.environ.get(name)), None)
    else:
        exc.param_hint = " / ".join(f"'{opt}'" for opt in param.opts)


def server_address(value: str) -> str:
    """``HOST:PORT`` as the clients take it (``[::1]:50051`` too), the port in 1-65535; else a usage error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT with a port from 1 to 65535, got {value!r}")
    return value
