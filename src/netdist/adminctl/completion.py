"""Shell completion of names the server knows: handlers, workers, packages.

Completing asks the server with a short timeout, using the connection options
typed so far (or their environment variables and defaults). A server that
cannot be reached, or refuses, completes nothing: completion never prints an
error into the middle of a command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import click
from click.shell_completion import CompletionItem

from netdist.adminctl.client import AdminClient
from netdist.adminctl.connect import client_from_params

COMPLETION_TIMEOUT_SECONDS = 2.0


def _names(
    ctx: click.Context, incomplete: str, ask: Callable[[AdminClient], Iterable[tuple[str, str]]]
) -> list[CompletionItem]:
    try:
        with client_from_params(ctx.find_root().params, timeout_seconds=COMPLETION_TIMEOUT_SECONDS) as admin:
            pairs = list(ask(admin))
    except Exception:
        return []
    seen: set[str] = set()
    items = []
    for value, help_text in pairs:
        if value.startswith(incomplete) and value not in seen and value.isprintable() and " " not in value:
            seen.add(value)
            items.append(CompletionItem(value, help=help_text))
    return items


def handler_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Job names, then ids, of the server's handlers."""

    def ask(admin: AdminClient) -> Iterable[tuple[str, str]]:
        handlers = admin.list_handlers(running=False)
        yield from ((h.job_name, f"{h.package}/{h.handler}, {h.state}") for h in handlers)
        yield from ((h.id, h.job_name) for h in handlers)

    return _names(ctx, incomplete, ask)


def worker_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Names, then ids, of the workers the server knows."""

    def ask(admin: AdminClient) -> Iterable[tuple[str, str]]:
        workers = admin.list_workers()
        yield from ((w.name, "connected" if w.connected else "not connected") for w in workers)
        yield from ((w.id, w.name) for w in workers)

    return _names(ctx, incomplete, ask)


def package_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Names of the uploaded packages."""
    return _names(ctx, incomplete, lambda admin: ((p.name, p.version) for p in admin.list_packages()))
