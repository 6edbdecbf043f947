"""The options of ``netdist-server serve`` that come in groups: retention, metrics, dependency resolution."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from netdist.cli_boundary import IntRange
from netdist.server.retention import Retention, parse_duration

F = TypeVar("F", bound=Callable[..., object])


def _all(*options: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


retention_options = _all(
    click.option(
        "--keep-outputs",
        default=None,
        metavar="DURATION",
        envvar="NETDIST_KEEP_OUTPUTS",
        show_envvar=True,
        help="Drop the outputs of processed jobs and the attempt history older than this (90s, 30m, 12h, 7d, 2w). "
        "Default: kept until the handler is removed.",
    ),
    click.option(
        "--keep-processed",
        default=None,
        metavar="DURATION|COUNT",
        envvar="NETDIST_KEEP_PROCESSED",
        show_envvar=True,
        help="Delete processed and failed jobs that finished longer ago than DURATION (12h, 7d), or all but the "
        "newest COUNT of each per handler (10000); the handlers' counts keep them. Default: kept until the "
        "handler is removed.",
    ),
    click.option(
        "--retention-interval",
        default=60.0,
        show_default=True,
        type=click.FloatRange(0.1, 86400),
        envvar="NETDIST_RETENTION_INTERVAL",
        show_envvar=True,
        help="Seconds between two retention passes (with --keep-outputs or --keep-processed); within a second "
        "while the last one deleted 2,000 rows or more.",
    ),
)

metrics_options = _all(
    click.option(
        "--metrics-port",
        default=None,
        type=IntRange(0, 65535),
        envvar="NETDIST_METRICS_PORT",
        show_envvar=True,
        help="Serve Prometheus metrics over HTTP at /metrics on this port (0 takes a free one; the address is "
        "printed). Off by default; docs/metrics.md lists them.",
    ),
    click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        envvar="NETDIST_METRICS_HOST",
        show_envvar=True,
        help="Address of the metrics endpoint (plain HTTP, no token: anyone who reaches it reads handler names "
        "and counts).",
    ),
)


resolver_options = _all(
    click.option(
        "--index-url",
        default=None,
        envvar="NETDIST_INDEX_URL",
        show_envvar=True,
        help="The package index job scripts' dependencies are resolved from (pip's --index-url). With it or "
        "--find-links, pip's own configuration is ignored; with neither, pip's configuration applies.",
    ),
    click.option(
        "--find-links",
        multiple=True,
        envvar="NETDIST_FIND_LINKS",
        show_envvar=True,
        help="A directory of wheels (or a URL of a page of links) to resolve dependencies from; repeatable. "
        "Alone (no --index-url), nothing else is asked: an air-gapped server.",
    ),
    click.option(
        "--resolve-timeout",
        default=300.0,
        show_default=True,
        type=click.FloatRange(1, 3600),
        envvar="NETDIST_RESOLVE_TIMEOUT",
        show_envvar=True,
        help="Seconds resolving one job script's dependencies for one platform may take.",
    ),
)


def retention_policy(keep_outputs: str | None, keep_processed: str | None, interval_seconds: float) -> Retention:
    """The retention options as a policy; a value that is neither a duration nor a count is a usage error."""
    outputs = processed_seconds = None
    processed_count = None
    try:
        if keep_outputs is not None:
            outputs = parse_duration(keep_outputs)
        if keep_processed is not None:
            if keep_processed.strip().isdigit():
                processed_count = int(keep_processed)
            else:
                processed_seconds = parse_duration(keep_processed)
    except ValueError as exc:
        option = "--keep-outputs" if keep_outputs is not None and outputs is None else "--keep-processed"
        raise click.BadParameter(str(exc), param_hint=option) from None
    return Retention(
        keep_outputs_seconds=outputs,
        keep_processed_seconds=processed_seconds,
        keep_processed_count=processed_count,
        interval_seconds=interval_seconds,
    )
