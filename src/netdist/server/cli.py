"""netdist-server: run the server, check its store, make its tokens and certificates.

Exit codes (:class:`~netdist.exit_codes.ExitCode`): 0 ok, 1 failed (``check``
found a problem, a token command was refused, the port is taken), 2 usage (an
option, a file, a URL, a data dir), 3 the store cannot be opened. Every
failure is one red line (:mod:`netdist.cli_boundary`).
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import stat
import sys
import tempfile
from pathlib import Path

import click
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from netdist import log_format, ziplimit
from netdist.bytesize import ByteSize
from netdist.cli_boundary import IntRange, OneLineGroup, fail
from netdist.errors import (
    CertificateError,
    DataDirInUseError,
    StoreInUseError,
    StoreUnavailableError,
    first_line,
)
from netdist.exit_codes import ExitCode
from netdist.gc_tuning import tune_collector
from netdist.malloc_tuning import keep_freed_memory
from netdist.server import check, event_loop
from netdist.server.app import ServerConfig, cannot_listen, serve
from netdist.server.data_dir_lock import lock_data_dir
from netdist.server.deps_resolver import ResolverConfig
from netdist.server.serve_options import metrics_options, resolver_options, retention_options, retention_policy
from netdist.server.store.engine import describe, read_only_url
from netdist.server.store_url import checked_url, store_url
from netdist.server.switch_interval import let_the_writer_in
from netdist.server.tls_cli import tls
from netdist.server.token_cli import tokens
from netdist.server.transport import ServerTLS, is_loopback, load_server_tls
from netdist.server.upload import UploadLimits
from netdist.ziplimit import ZipLimits

log = logging.getLogger("netdist.server")
_PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The netdist server: runs handlers, hands out jobs, keeps everything in its store."""


@main.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="NETDIST_HOST",
    show_envvar=True,
    help="Address to listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--port",
    default=50051,
    show_default=True,
    type=IntRange(0, 65535),
    envvar="NETDIST_PORT",
    show_envvar=True,
    help="Port; 0 takes a free one (the address is printed).",
)
@click.option(
    "--data-dir",
    default="netdist-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NETDIST_DATA_DIR",
    show_envvar=True,
    help="Wheels, job scripts and the SQLite database.",
)
@click.option(
    "--db",
    "db_url",
    default=None,
    envvar="NETDIST_DB",
    show_envvar=True,
    help="SQLAlchemy URL, e.g. postgresql+psycopg:///netdist (default: SQLite in the data dir).",
)
@click.option(
    "--heartbeat-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.05, 600),
    envvar="NETDIST_HEARTBEAT_INTERVAL",
    show_envvar=True,
    help="Seconds between worker heartbeats; a worker silent for 3 intervals is gone.",
)
@click.option(
    "--max-heartbeats-per-second",
    default=500.0,
    show_default=True,
    type=click.FloatRange(1, 100_000),
    envvar="NETDIST_MAX_HEARTBEATS_PER_SECOND",
    show_envvar=True,
    help="Past this many workers per heartbeat interval, the interval grows so that all of them "
    "together send at most this many heartbeats a second.",
)
@click.option(
    "--reconnect-grace",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0, 60),
    envvar="NETDIST_RECONNECT_GRACE",
    show_envvar=True,
    help="Seconds the leases of a worker whose stream ended without handing them back wait for it to "
    "reconnect; then they are requeued (an attempt charged only for jobs that had started).",
)
@click.option(
    "--lease-write-delay",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    envvar="NETDIST_LEASE_WRITE_DELAY",
    show_envvar=True,
    help="Seconds a lease is out before it is written to the store. A shorter job's lease is never "
    "written (its result says it all; the job's lease number fences it), and a restarted server runs "
    "it again; a longer one is adopted after a restart. 0: write every lease when it is made.",
)
@click.option(
    "--handler-timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(0.1, 86400),
    envvar="NETDIST_HANDLER_TIMEOUT",
    show_envvar=True,
    help="Seconds a handler call (create_more_jobs, a batch of process_result, a hook) may take; "
    "a handler that does not answer in time is killed and fails.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    envvar="NETDIST_LOG_LEVEL",
    show_envvar=True,
)
@click.option(
    "--tls-cert",
    type=_PEM_FILE,
    default=None,
    envvar="NETDIST_TLS_CERT",
    show_envvar=True,
    help="The server's certificate (PEM, chain after it); with --tls-key, serve TLS "
    "(`netdist-server tls init` makes both).",
)
@click.option(
    "--tls-key",
    type=_PEM_FILE,
    default=None,
    envvar="NETDIST_TLS_KEY",
    show_envvar=True,
    help="The private key of --tls-cert (PEM, unencrypted).",
)
@click.option(
    "--tls-client-ca",
    type=_PEM_FILE,
    default=None,
    envvar="NETDIST_TLS_CLIENT_CA",
    show_envvar=True,
    help="Require client certificates (mutual TLS) that chain to these roots (PEM, e.g. the ca.crt of `tls init`).",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="NETDIST_INSECURE",
    show_envvar=True,
    help="Serve plaintext on an address other than loopback (warned on every start).",
)
@click.option(
    "--max-upload-bytes",
    default="512M",
    show_default=True,
    type=ByteSize(),
    envvar="NETDIST_MAX_UPLOAD_BYTES",
    show_envvar=True,
    help="Most bytes of one package upload, all its wheels together (512M, 2G, ...).",
)
@click.option(
    "--max-store-bytes",
    default="0",
    show_default=True,
    type=ByteSize(),
    envvar="NETDIST_MAX_STORE_BYTES",
    show_envvar=True,
    help="Most bytes of all stored wheels and job scripts; an upload that would pass it is refused (0: no limit).",
)
@click.option(
    "--max-unpacked-bytes",
    default="1G",
    show_default=True,
    type=ByteSize(),
    envvar="NETDIST_MAX_UNPACKED_BYTES",
    show_envvar=True,
    help="Most bytes one wheel may unpack to, as its zip directory declares and as unpacked.",
)
@click.option(
    "--max-compression-ratio",
    default=ziplimit.DEFAULT_MAX_RATIO,
    show_default=True,
    type=click.FloatRange(1),
    envvar="NETDIST_MAX_COMPRESSION_RATIO",
    show_envvar=True,
    help="Most unpacked bytes per compressed byte, of a wheel and of each member (those under 1 MiB "
    "unpacked are exempt): zip bombs are refused at upload.",
)
@retention_options
@metrics_options
@resolver_options
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    data_dir: Path,
    db_url: str | None,
    heartbeat_interval: float,
    max_heartbeats_per_second: float,
    reconnect_grace: float,
    lease_write_delay: float,
    handler_timeout: float,
    log_level: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    insecure: bool,
    max_upload_bytes: int,
    max_store_bytes: int,
    max_unpacked_bytes: int,
    max_compression_ratio: float,
    keep_outputs: str | None,
    keep_processed: str | None,
    retention_interval: float,
    metrics_port: int | None,
    metrics_host: str,
    index_url: str | None,
    find_links: tuple[str, ...],
    resolve_timeout: float,
) -> None:
    """Serve until SIGINT or SIGTERM.

    Plaintext only on loopback (127.0.0.0/8, ::1, localhost); any other --host,
    0.0.0.0 and :: included, needs --tls-cert and --tls-key, or --insecure.
    """
    server_tls = _server_tls(host, tls_cert, tls_key, tls_client_ca, insecure)
    retention = retention_policy(keep_outputs, keep_processed, retention_interval)
    if metrics_port is None and ctx.get_parameter_source("metrics_host") != click.core.ParameterSource.DEFAULT:
        fail("UsageError: --metrics-host needs --metrics-port (metrics are off without it)", ExitCode.USAGE)
    if db_url is not None:
        checked_url(db_url)
    _check_port(host, port)
    open_to_others = _check_data_dir(data_dir)
    try:
        lock = lock_data_dir(data_dir)  # held until this process ends
    except DataDirInUseError as exc:
        fail(f"DataDirError: {exc}", ExitCode.USAGE)
    log_format.configure(log_level.upper())
    if open_to_others:
        log.warning("%s", open_to_others)
    _log_transport(host, server_tls)
    if metrics_port is not None and not is_loopback(metrics_host):
        log.warning(
            "serving metrics on %s: plain HTTP without a token; anyone on the network can read them", metrics_host
        )
    config = ServerConfig(
        host=host,
        port=port,
        data_dir=data_dir,
        db_url=db_url,
        heartbeat_interval_seconds=heartbeat_interval,
        max_heartbeats_per_second=max_heartbeats_per_second,
        reconnect_grace_seconds=reconnect_grace,
        lease_write_delay_seconds=lease_write_delay,
        handler_call_timeout_seconds=handler_timeout,
        tls=server_tls,
        upload_limits=UploadLimits(max_upload_bytes=max_upload_bytes),
        zip_limits=ZipLimits(max_unpacked_bytes=max_unpacked_bytes, max_ratio=max_compression_ratio),
        max_store_bytes=max_store_bytes or None,
        retention=retention,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        resolver=ResolverConfig(index_url=index_url, find_links=find_links, timeout_seconds=resolve_timeout),
    )
    keep_freed_memory()
    tune_collector()
    let_the_writer_in()
    try:
        event_loop.run(serve(config))
    except StoreUnavailableError as exc:
        fail(f"StoreUnavailableError: {exc.message}", ExitCode.UNAVAILABLE)
    except StoreInUseError as exc:
        fail(f"StoreInUseError: {exc.message}", ExitCode.USAGE)
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}", ExitCode.FAILED)
    finally:
        lock.close()


@main.command("check")
@click.option(
    "--db",
    "db_url",
    default=None,
    envvar="NETDIST_DB",
    show_envvar=True,
    help="SQLAlchemy URL of the store (default: the SQLite file in --data-dir).",
)
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NETDIST_DATA_DIR",
    show_envvar=True,
    help="The server's data dir: its blobs are hashed and searched for leftovers of interrupted writes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--limit",
    default=check.DEFAULT_LIMIT,
    show_default=True,
    type=IntRange(1),
    help="Most problems listed per check.",
)
def check_command(db_url: str | None, data_dir: Path | None, as_json: bool, limit: int) -> None:
    """Check the store's invariants (read only; safe on a live server).

    Exits 0 when the store is sound, 1 when a problem was found, 2 on a bad
    command line or URL, 3 when the database cannot be opened.
    """
    if data_dir is not None and not data_dir.is_dir():
        fail(f"UsageError: --data-dir {data_dir} is not a directory", ExitCode.USAGE)
    url = store_url(db_url, data_dir)
    try:
        engine = create_engine(read_only_url(checked_url(url)))
    except ValueError as exc:
        fail(f"UsageError: --db {describe(url)}: {first_line(exc)}", ExitCode.USAGE)
    try:
        with engine.connect() as conn:
            report = check.check(conn, data_dir, limit=limit)
    except SQLAlchemyError as exc:
        fail(f"DatabaseError: cannot check the store at {describe(url)}: {first_line(exc)}", ExitCode.UNAVAILABLE)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_json_dict(), indent=2))
    else:
        for problem in report.problems:
            click.echo(str(problem))
        checked = f"{_count(report.jobs, 'job')}, {_count(report.handlers, 'handler instance')}, " + (
            _count(report.blobs, "blob") if report.blobs is not None else "no data dir"
        )
        if report.ok:
            click.secho(f"ok: no problems ({checked} checked)", fg="green")
        else:
            click.secho(f"{_count(len(report.problems), 'problem')} found ({checked} checked)", fg="red", bold=True)
    sys.exit(ExitCode.OK if report.ok else ExitCode.FAILED)


def _server_tls(
    host: str, cert: Path | None, key: Path | None, client_ca: Path | None, insecure: bool
) -> ServerTLS | None:
    """The TLS to serve with, or None for plaintext where that is allowed; exits 2 on a bad combination."""
    if (cert is None) != (key is None):
        fail("UsageError: --tls-cert and --tls-key go together: give both", ExitCode.USAGE)
    if cert is None or key is None:
        if client_ca is not None:
            fail("UsageError: --tls-client-ca needs TLS: give --tls-cert and --tls-key too", ExitCode.USAGE)
        if not insecure and not is_loopback(host):
            fail(
                f"UsageError: --host {host} is reachable from other machines and would serve plaintext: give "
                "--tls-cert and --tls-key (`netdist-server tls init` makes them), or --insecure",
                ExitCode.USAGE,
            )
        return None
    if insecure:
        fail("UsageError: --insecure serves plaintext; it does not go with --tls-cert and --tls-key", ExitCode.USAGE)
    try:
        return load_server_tls(cert, key, client_ca)
    except CertificateError as exc:
        fail(f"CertificateError: {exc.message}", ExitCode.USAGE)


def _check_port(host: str, port: int) -> None:
    """Exits 1 when ``host:port`` cannot be listened on, before the store is opened or migrated and
    before a first start writes its tokens (gRPC's own failure comes after them, with a line of its core's
    log). As gRPC does: the port is refused only when none of the host's addresses takes it."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return  # not resolvable: gRPC says so where it binds
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: a port in TIME_WAIT is free
            try:
                probe.bind(address)
            except OSError:
                continue
            return
    fail(f"OSError: {cannot_listen(host, port)}", ExitCode.FAILED)


def _check_data_dir(data_dir: Path) -> str:
    """Exits 2 when the server could not make its files in ``data_dir`` (a file there, no permission, read only).

    A new data dir is for the server's user alone (0700): the store in it holds every job's input and output,
    and its tokens. One that others may enter is used; returns the warning to log then ("" if none)."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError as exc:
        fail(f"DataDirError: cannot use --data-dir {data_dir}: {exc.strerror or exc}", ExitCode.USAGE)
    if not mode & 0o077:
        return ""
    return (
        f"the data dir {data_dir} is open to other users (mode {mode:04o}): the store in it holds every job's "
        f"input and output; chmod 700 {data_dir}"
    )


def _log_transport(host: str, server_tls: ServerTLS | None) -> None:
    if server_tls is None:
        if not is_loopback(host):
            log.warning(
                "serving PLAINTEXT on %s (--insecure): anyone on the network can read every call and "
                "send their own; use --tls-cert and --tls-key",
                host,
            )
        return
    log.info(
        "TLS certificate %s%s",
        server_tls.certificate,
        "; client certificates required (mutual TLS)" if server_tls.mutual else "",
    )
    if server_tls.expires_soon(datetime.datetime.now(datetime.UTC)):
        log.warning(
            "the TLS certificate ends on %s: renew it (netdist-server tls server)",
            f"{server_tls.not_after:%Y-%m-%d %H:%M} UTC",
        )


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


main.add_command(tls)
main.add_command(tokens)

if __name__ == "__main__":
    main()
