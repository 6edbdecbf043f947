"""netdist-server: run the server."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from netdist.server.app import ServerConfig, serve

RET_OK, RET_FAILED, RET_USAGE = 0, 1, 2


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


if __name__ == "__main__":
    main()
