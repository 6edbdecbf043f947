"""``netdist-admin status``, ``watch`` and ``audit``: the server as a whole, now and in its record."""

from __future__ import annotations

import re
import time
from datetime import datetime

import click

from netdist.adminctl import dashboard, render, view
from netdist.adminctl.command_io import client, emit_json, json_option, out, show
from netdist.cli_boundary import IntRange


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the server's version, database and totals."""
    reply = client(ctx).status()
    if as_json:
        emit_json(view.status_dict(reply))
    else:
        show(render.status_table(reply))


@click.command()
@click.option(
    "--interval",
    "interval_seconds",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="When the output is not a terminal: seconds between the plain frames printed"
    " (a terminal is redrawn as events come).",
)
@click.pass_context
def watch(ctx: click.Context, interval_seconds: float) -> None:
    """A live dashboard of handlers and workers, from the server's event stream.

    Ends on Ctrl-C (exit 130) or SIGTERM (exit 0). With the output redirected it
    prints plain frames (no escape codes), and the last state when it ends."""
    dashboard.run(client(ctx), interval_seconds=interval_seconds, console=out())


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


@click.command()
@click.option(
    "--since",
    callback=_since,
    metavar="SPAN|TIME",
    help="Only entries since then: 30m, 2h, 7d back from now, or a date/time (ISO 8601, local time).",
)
@click.option(
    "--limit",
    type=IntRange(1, 1000),
    default=100,
    show_default=True,
    help="At most this many entries, newest first.",
)
@json_option
@click.pass_context
def audit(ctx: click.Context, since: float, limit: int, as_json: bool) -> None:
    """Who changed what, when, from where, and how it ended (newest first)."""
    entries = client(ctx).list_audit(since=since, limit=limit)
    if as_json:
        emit_json([view.audit_dict(e) for e in entries])
    else:
        show(render.audit_table(entries))
