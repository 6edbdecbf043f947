"""netdist-server: run the server."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from netdist.server import check
from netdist.server.app import ServerConfig, serve
from netdist.server.store.engine import default_url, describe, read_only_url
from netdist.server.token_cli import tokens

RET_OK, RET_FAILED, RET_USAGE, RET_UNAVAILABLE = 0, 1, 2, 3


@click.group()
def main() -> None:
    """The netdist server: runs handlers, hands out jobs, keeps everything in its store."""


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="NETDIST_HOST", show_envvar=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=50051, show_default=True, type=click.IntRange(0, 65535), envvar="NETDIST_PORT",
              show_envvar=True, help="Port; 0 takes a free one (the address is printed).")
@click.option("--data-dir", default="netdist-data", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              envvar="NETDIST_DATA_DIR", show_envvar=True, help="Wheels, job scripts and the SQLite database.")
@click.option("--db", "db_url", default=None, envvar="NETDIST_DB", show_envvar=True,
              help="SQLAlchemy URL, e.g. postgresql+psycopg:///netdist (default: SQLite in the data dir).")
@click.option("--heartbeat-interval", default=5.0, show_default=True, type=click.FloatRange(0.05, 600),
              envvar="NETDIST_HEARTBEAT_INTERVAL", show_envvar=True,
              help="Seconds between worker heartbeats; a worker silent for 3 intervals is gone.")
@click.option("--reconnect-grace", default=2.0, show_default=True, type=click.FloatRange(0, 60),
              envvar="NETDIST_RECONNECT_GRACE", show_envvar=True,
              help="Seconds the leases of a worker whose stream ended without handing them back wait for it to "
                   "reconnect; then they are requeued (an attempt charged only for jobs that had started).")
@click.option("--handler-timeout", default=600.0, show_default=True, type=click.FloatRange(0.1, 86400),
              envvar="NETDIST_HANDLER_TIMEOUT", show_envvar=True,
              help="Seconds a handler call (create_more_jobs, a batch of process_result, a hook) may take; "
                   "a handler that does not answer in time is killed and fails.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), envvar="NETDIST_LOG_LEVEL", show_envvar=True)
def serve_command(host: str, port: int, data_dir: Path, db_url: str | None, heartbeat_interval: float,
                  reconnect_grace: float, handler_timeout: float, log_level: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    config = ServerConfig(host=host, port=port, data_dir=data_dir, db_url=db_url,
                          heartbeat_interval_seconds=heartbeat_interval, reconnect_grace_seconds=reconnect_grace,
                          handler_call_timeout_seconds=handler_timeout)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(RET_FAILED)


@main.command("check")
@click.option("--db", "db_url", default=None, envvar="NETDIST_DB", show_envvar=True,
              help="SQLAlchemy URL of the store (default: the SQLite file in --data-dir).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              envvar="NETDIST_DATA_DIR", show_envvar=True,
              help="The server's data dir: its blobs are hashed and searched for leftovers of interrupted writes.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--limit", default=check.DEFAULT_LIMIT, show_default=True, type=click.IntRange(1),
              help="Most problems listed per check.")
def check_command(db_url: str | None, data_dir: Path | None, as_json: bool, limit: int) -> None:
    """Check the store's invariants (read only; safe on a live server).

    Exits 0 when the store is sound, 1 when a problem was found, 2 on a bad
    command line or URL, 3 when the database cannot be opened.
    """
    if db_url is None and data_dir is None:
        _fail("UsageError: give the store: --db URL, or --data-dir DIR for its SQLite file", RET_USAGE)
    if data_dir is not None and not data_dir.is_dir():
        _fail(f"UsageError: --data-dir {data_dir} is not a directory", RET_USAGE)
    url = db_url or default_url(data_dir or Path())
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        _fail(f"UsageError: --db {url!r} is not a SQLAlchemy URL: {_first_line(exc)}", RET_USAGE)
    try:
        engine = create_engine(read_only_url(parsed))
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        _fail(f"UsageError: --db {describe(url)}: {_first_line(exc)}", RET_USAGE)
    try:
        with engine.connect() as conn:
            report = check.check(conn, data_dir, limit=limit)
    except SQLAlchemyError as exc:
        _fail(f"DatabaseError: cannot check the store at {describe(url)}: {_first_line(exc)}", RET_UNAVAILABLE)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_json_dict(), indent=2))
    else:
        for problem in report.problems:
            click.echo(str(problem))
        checked = f"{_count(report.jobs, 'job')}, {_count(report.handlers, 'handler instance')}, " + (
            _count(report.blobs, "blob") if report.blobs is not None else "no data dir")
        if report.ok:
            click.secho(f"ok: no problems ({checked} checked)", fg="green")
        else:
            click.secho(f"{_count(len(report.problems), 'problem')} found ({checked} checked)", fg="red", bold=True)
    sys.exit(RET_OK if report.ok else RET_FAILED)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(message: str, code: int) -> NoReturn:
    click.secho(message, fg="red", err=True)
    sys.exit(code)


main.add_command(tokens)


if __name__ == "__main__":
    main()
