"""``netdist-admin workers``: list, forget, disable and enable the workers the server knows."""

from __future__ import annotations

import click

from netdist.adminctl import render, view
from netdist.adminctl.command_io import client, emit_json, json_option, show
from netdist.adminctl.completion import worker_names
from netdist.printable import printable


@click.group()
def workers() -> None:
    """Workers known to the server. REF is an id or a name."""


@workers.command("list")
@json_option
@click.pass_context
def workers_list(ctx: click.Context, as_json: bool) -> None:
    """List workers, connected or not."""
    items = client(ctx).list_workers()
    if as_json:
        emit_json([view.worker_dict(w) for w in items])
    else:
        show(render.workers_table(items))


@workers.command("remove")
@click.argument("ref", shell_complete=worker_names)
@click.pass_context
def workers_remove(ctx: click.Context, ref: str) -> None:
    """Forget worker REF; its leased jobs go back to the queue."""
    reply = client(ctx).remove_worker(ref)
    n = reply.leases_returned
    click.echo(f"removed worker {printable(ref)}; {n} job{'s' if n != 1 else ''} returned to the queue")


@workers.command("disable")
@click.argument("ref", shell_complete=worker_names)
@click.pass_context
def workers_disable(ctx: click.Context, ref: str) -> None:
    """Disconnect worker REF and refuse it until enabled; its jobs go back to the queue."""
    n = client(ctx).disable_worker(ref).leases_returned
    click.echo(f"disabled worker {printable(ref)}; {n} job{'s' if n != 1 else ''} returned to the queue")


@workers.command("enable")
@click.argument("ref", shell_complete=worker_names)
@click.pass_context
def workers_enable(ctx: click.Context, ref: str) -> None:
    """Let worker REF connect again."""
    client(ctx).enable_worker(ref)
    click.echo(f"enabled worker {printable(ref)}")
