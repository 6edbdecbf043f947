"""What every ``netdist-admin`` command reads from and writes to.

The :class:`~netdist.adminctl.client.AdminClient` the root group opened
(:mod:`netdist.adminctl.cli`), a rich console for tables and lines, JSON on
stdout, and the ``--json`` option that picks between them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console, RenderableType

from netdist.adminctl.client import AdminClient

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")


def client(ctx: click.Context) -> AdminClient:
    """The client the root group put on the context."""
    found = ctx.find_object(AdminClient)
    assert found is not None  # set by main()
    return found


PLAIN_WIDTH = 160
"""Columns of the tables written to a file or a pipe, which has no width of its own: not the 80 that rich
assumes, which fold every row of a table of handlers or jobs. ``COLUMNS`` set overrides it."""


def out() -> Console:
    """A console on stdout."""
    # Built per call: click's test runner swaps sys.stdout while a command runs.
    console = Console(highlight=False)
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(highlight=False, width=PLAIN_WIDTH)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def show(renderable: RenderableType) -> None:
    out().print(renderable)
