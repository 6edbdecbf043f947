"""``netdist-admin events``: the server's event stream as lines, for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import click

from netdist.adminctl import event_lines
from netdist.adminctl.command_io import client
from netdist.adminctl.live_model import LiveModel
from netdist.adminctl.stopping import sigterm_ends
from netdist.errors import UnavailableError


@click.command()
@click.option("--follow", "-f", is_flag=True, help="After the snapshot, print each event as it comes, until stopped.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, each with a type and a time.")
@click.pass_context
def events(ctx: click.Context, follow: bool, as_json: bool) -> None:
    """Print the server's state (a snapshot) and, with --follow, every change after it.

    Changes: handlers created, replaced, changing state or removed; job counts
    per handler; workers connected, disconnected, disabled, enabled or removed;
    running jobs and their progress per worker. Counts and progress come at most
    once per handler or worker every 50 ms. With --follow it ends on SIGTERM
    (exit 0) or Ctrl-C (exit 130)."""
    model = LiveModel()
    with sigterm_ends():
        for reply in client(ctx).watch():
            lines: Iterator[str]
            if as_json:
                lines = (json.dumps(o) for o in event_lines.json_objects(reply))
            else:
                lines = event_lines.readable_lines(reply, model)
            for line in lines:
                click.echo(line)
            if not follow:
                return
        # The server ended the stream: it stopped (a kill or a broken connection raises instead). Not a
        # requested end: a pipeline that follows events must not take it for one.
        raise UnavailableError("the server ended the event stream (it stopped or restarted); nothing more follows")
