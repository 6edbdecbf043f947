"""``netdist-worker``: connect to a server and run jobs until stopped.

Exit codes (:class:`~netdist.exit_codes.ExitCode`): 0 ok (also after a
graceful stop), 1 the server refused the token, 2 usage (an option, a token or
certificate file, the cache dir), 130 interrupted (a second SIGINT/SIGTERM
during the graceful stop). Every failure is one red line
(:mod:`netdist.cli_boundary`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from netdist import fields, log_format
from netdist.bytesize import ByteSize
from netdist.channel import ClientSecurity
from netdist.cli_boundary import IntRange, OneLineGroup, fail, server_address
from netdist.client_tls_options import client_tls_options
from netdist.errors import (
    CertificateError,
    InvalidArgumentError,
    TokenFileError,
    UnauthenticatedError,
)
from netdist.exit_codes import ExitCode
from netdist.gc_tuning import tune_collector
from netdist.token_file import find_token
from netdist.worker.config import WorkerConfig
from netdist.worker.identity import claim_worker_id
from netdist.worker.session import WorkerSession

MIN_JOB_MEMORY_MB = 64
"""An idle executor process already uses about 30 MB of data (thread stacks included)."""

log = logging.getLogger("netdist.worker")


def _parse_target(value: str) -> str:
    try:
        return server_address(value)
    except click.BadParameter as exc:
        exc.param_hint = "HOST:PORT"
        raise


def _parse_labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, label = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected k=v, got {value!r}", param_hint="--label")
        key = _identifier("a label key", key.strip(), fields.MAX_LABEL_KEY, "--label")
        labels[key] = _identifier(f"label {key!r}", label.strip(), fields.MAX_LABEL_VALUE, "--label")
    if len(labels) > fields.MAX_LABELS:
        raise click.BadParameter(f"at most {fields.MAX_LABELS} labels, got {len(labels)}", param_hint="--label")
    return labels


def _identifier(field: str, value: str, limit: int, hint: str) -> str:
    """What the server would refuse in the Hello is a usage error here, before connecting."""
    try:
        return fields.check_identifier(field, value, limit)
    except InvalidArgumentError as exc:
        raise click.BadParameter(exc.message, param_hint=hint) from None


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    envvar="NETDIST_WORKER_LOG_LEVEL",
    show_envvar=True,
)
def main(log_level: str) -> None:
    """The netdist worker: runs jobs for a netdist server."""
    log_format.configure(log_level.upper())


@main.command()
@click.argument("target", metavar="HOST:PORT", envvar="NETDIST_WORKER_SERVER")
@click.option(
    "--name",
    default=socket.gethostname,
    show_default="hostname",
    envvar="NETDIST_WORKER_NAME",
    show_envvar=True,
    help="Name shown by the server.",
)
@click.option(
    "--slots",
    type=IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="CPU count",
    envvar="NETDIST_WORKER_SLOTS",
    show_envvar=True,
    help="Jobs run in parallel (one child process each).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path.home() / ".cache" / "netdist-worker",
    show_default="~/.cache/netdist-worker",
    envvar="NETDIST_WORKER_CACHE_DIR",
    show_envvar=True,
    help="Artifact cache and the worker id.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="K=V",
    envvar="NETDIST_WORKER_LABEL",
    show_envvar=True,
    help="A label for handler selectors (repeatable).",
)
@click.option(
    "--max-prefetch",
    type=IntRange(min=0),
    default=4096,
    show_default=True,
    envvar="NETDIST_WORKER_MAX_PREFETCH",
    show_envvar=True,
    help="Most jobs held beyond the slots (short jobs only).",
)
@click.option(
    "--grace",
    "grace_seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="NETDIST_WORKER_GRACE",
    show_envvar=True,
    help="Seconds running jobs get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--max-job-memory",
    "max_job_memory_mb",
    type=IntRange(min=MIN_JOB_MEMORY_MB),
    default=None,
    metavar="MB",
    envvar="NETDIST_WORKER_MAX_JOB_MEMORY",
    show_envvar=True,
    help="Most memory one executor process may allocate (its data size: heap and"
    " private mappings, Linux). A job past it fails with MemoryError. No limit by default.",
)
@click.option(
    "--capture-output",
    is_flag=True,
    envvar="NETDIST_WORKER_CAPTURE_OUTPUT",
    show_envvar=True,
    help="Send what jobs print to stdout and stderr to the server's job log (netdist-admin jobs log),"
    " as ctx.log lines are; it still shows on this worker's stderr.",
)
@client_tls_options(
    tls_env="NETDIST_WORKER_TLS",
    ca_env=("NETDIST_WORKER_TLS_CA", "NETDIST_TLS_CA"),
    cert_env="NETDIST_WORKER_TLS_CERT",
    key_env="NETDIST_WORKER_TLS_KEY",
    who="worker",
)
@click.option(
    "--max-unpacked-bytes",
    type=ByteSize(),
    default="1G",
    show_default=True,
    envvar="NETDIST_WORKER_MAX_UNPACKED_BYTES",
    show_envvar=True,
    help="Most bytes one wheel may unpack to in the cache (512M, 2G, ...); a job whose wheel"
    " would pass it fails with an ArtifactError. Match the server's --max-unpacked-bytes.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="NETDIST_WORKER_TOKEN_FILE",
    show_envvar=True,
    help="File holding the worker token (or the token itself in NETDIST_WORKER_TOKEN;"
    " default: worker.token in NETDIST_DATA_DIR or ./netdist-data, if there).",
)
def connect(
    *,
    target: str,
    name: str,
    slots: int,
    cache_dir: Path,
    labels: Sequence[str],
    max_prefetch: int,
    grace_seconds: float,
    max_job_memory_mb: int | None,
    capture_output: bool,
    tls: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_unpacked_bytes: int,
    token_file: Path | None,
) -> None:
    """Connect to the server at HOST:PORT and run jobs until stopped."""
    cache_dir = cache_dir.expanduser()
    try:
        token = find_token(
            token_file=token_file,
            env=os.environ,
            variable="NETDIST_WORKER_TOKEN",
            default_name="worker.token",
        )
    except TokenFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--token-file") from None
    security = ClientSecurity(token=token.value, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    try:
        security.check()
    except CertificateError as exc:
        fail(f"CertificateError: {exc.message}", ExitCode.USAGE)
    config = WorkerConfig(
        target=_parse_target(target),
        name=_identifier("the name", name, fields.MAX_NAME, "--name"),
        slots=slots,
        cache_dir=cache_dir,
        labels=_parse_labels(labels),
        max_prefetch=max_prefetch,
        grace_seconds=grace_seconds,
        max_job_memory_mb=max_job_memory_mb,
        capture_output=capture_output,
        security=security,
        max_unpacked_bytes=max_unpacked_bytes,
    )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        seat = claim_worker_id(cache_dir)  # held until the process exits
    except OSError as exc:
        fail(f"CacheDirError: cannot use {cache_dir}: {exc.strerror or exc}", ExitCode.USAGE)
    tune_collector()
    try:
        code = asyncio.run(
            run_worker(
                config,
                worker_id=seat.worker_id,
                credential_path=seat.credential_path,
                results_path=seat.results_path,
            )
        )
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except UnauthenticatedError as exc:
        hint = f" (the token given came from {token.source})" if token.value else f" ({token.source})"
        fail(f"UnauthenticatedError: {exc.message}{hint}", ExitCode.FAILED)
    sys.exit(code)


async def run_worker(
    config: WorkerConfig, *, worker_id: str, credential_path: Path | None = None, results_path: Path | None = None
) -> ExitCode:
    """Run until stopped by a signal; the exit code. Raises UnauthenticatedError
    when the server refuses the token."""
    session = WorkerSession(config, worker_id=worker_id, credential_path=credential_path, results_path=results_path)
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if len(received) == 1:
            log.info(
                "%s: finishing running jobs (up to %g s); send it again to stop at once",
                signum.name,
                config.grace_seconds,
            )
            session.stop()
        else:
            log.warning("%s again: killing running jobs", signum.name)
            session.abort()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await session.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return ExitCode.INTERRUPTED if session.aborted else ExitCode.OK
