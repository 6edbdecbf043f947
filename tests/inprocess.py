"""The real server (server/app.py) in the test process: its own event loop in a thread.

Everything but the process boundary is the real thing: the store (a SQLite file or a
PostgreSQL database), gRPC on an ephemeral loopback port, the interceptors, the
dispatcher, the handler manager and its handler hosts (child processes, started from
the loop's thread, which lives as long as the server: see parent_death.py). Workers
still connect as processes. What a subprocess cannot give is the handles: a test
reads the lease table or a runtime directly, on the server's own loop
(:meth:`InProcessServer.inspect`), so it sees a consistent state and no data race.

It starts in about a tenth of a second against the second or so a ``netdist-server``
process takes to import, and it stops the way ``serve`` stops on SIGTERM. Kill -9
needs a process: the fault suite and the tests of a killed server keep
:func:`netdist.testing.start_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from netdist.server.app import NetDistServer, ServerConfig
from netdist.server.dispatcher import Dispatcher
from netdist.server.lease_model import Lease
from netdist.server.manager import HandlerManager
from netdist.server.runtime import RunningHandler
from netdist.testing import register_data_dir
from netdist.token_file import read_token_file

T = TypeVar("T")
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 20.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class InProcessServer:
    """A started :class:`NetDistServer` on a loop of its own; :meth:`stop` ends both.

    ``address``, ``admin_token``, ``worker_token_file`` and ``output()`` are those of
    :class:`netdist.testing.ServerProcess`, so :class:`netdist.testing.Admin` and
    :func:`netdist.testing.start_worker` find it the same way.
    """

    def __init__(self, config: ServerConfig, *, name: str, log_path: Path) -> None:
        self.config = config
        self.name = name
        self.log_path = log_path
        self.app = NetDistServer(config)
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-loop", daemon=True)
        self._log_handler: logging.Handler | None = None
        self._stopped = False

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handler = _attach_log(self.log_path)
        self._thread.start()
        try:
            self.address = self.run(self.app.start, timeout=START_TIMEOUT_SECONDS)
        except BaseException:
            self._end_loop()
            raise
        register_data_dir(self.address, self.config.data_dir)
        return self.address

    def stop(self) -> int:
        """Stop as ``serve`` does on SIGTERM; 0 when it stopped cleanly, 1 when it raised (logged)."""
        if self._stopped:
            return 0
        self._stopped = True
        code = 0
        try:
            self.run(self.app.stop, timeout=STOP_TIMEOUT_SECONDS)
        except Exception:
            logging.getLogger("tests.inprocess").exception("%s did not stop cleanly", self.name)
            code = 1
        self._end_loop()
        return code

    def alive(self) -> bool:
        return not self._stopped

    def _end_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT_SECONDS)
        if not self._thread.is_alive():
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()
        if self._log_handler is not None:
            _detach_log(self._log_handler)
            self._log_handler = None

    # -- reaching inside -----------------------------------------------------------------

    def run(self, call: Callable[[], Awaitable[T]], *, timeout: float = 30.0) -> T:
        """Await ``call()`` on the server's loop and return its result (from the test's thread)."""

        async def wrapped() -> T:
            return await call()

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        return future.result(timeout)

    def inspect(self, read: Callable[[], T], *, timeout: float = 30.0) -> T:
        """Call ``read()`` on the server's loop, between two of its steps: what it sees is consistent."""

        async def wrapped() -> T:
            return read()

        return self.run(wrapped, timeout=timeout)

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app.dispatcher

    @property
    def manager(self) -> HandlerManager:
        return self.app.manager

    def leases(self, *, handler_id: str | None = None, worker_id: str | None = None) -> list[Lease]:
        """Copies of the leases in the dispatcher's lease table (of a handler, of a worker), by job id."""
        return self.inspect(
            lambda: [
                copy.copy(lease)
                for lease in self.dispatcher.table.leases_of(handler_id=handler_id, worker_id=worker_id)
            ]
        )

    def runtime(self, handler_id: str) -> RunningHandler | None:
        """The running handler instance, or None (not running)."""
        return self.inspect(lambda: self.manager.runtimes.get(handler_id))

    # -- what ServerProcess offers too ---------------------------------------------------

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def admin_token(self) -> str:
        return read_token_file(self.token_file("admin"))

    @property
    def worker_token_file(self) -> Path:
        return self.token_file("worker")

    def token_file(self, name: str) -> Path:
        return self.config.data_dir / f"{name}.token"


def start_in_process(
    data_dir: Path,
    *,
    log_dir: Path,
    db_url: str | None = None,
    name: str = "server",
    heartbeat_interval_seconds: float = 5.0,
    **options: Any,
) -> InProcessServer:
    """Start the real app on ``127.0.0.1:0`` (or ``port=``); ``options`` are further :class:`ServerConfig` fields."""
    config = ServerConfig(
        port=options.pop("port", 0),
        data_dir=data_dir,
        db_url=db_url,
        heartbeat_interval_seconds=heartbeat_interval_seconds,
        **options,
    )
    server = InProcessServer(config, name=name, log_path=log_dir / f"{name}.log")
    server.start()
    return server


@contextlib.contextmanager
def in_process(data_dir: Path, *, log_dir: Path, **options: Any) -> Iterator[InProcessServer]:
    """:func:`start_in_process`, stopped on the way out (and failing the test if it did not stop cleanly)."""
    server = start_in_process(data_dir, log_dir=log_dir, **options)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"the in-process server did not stop cleanly:\n{server.output()[-4000:]}"


# The server's loggers write to a file per server, as a process's stderr would; the level is
# INFO, as `netdist-server serve` sets it, for as long as a server runs.
_LOGGER = logging.getLogger("netdist")
_attached: list[logging.Handler] = []
_level_before: list[int] = []


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if not _attached:
        _level_before.append(_LOGGER.level)
        _LOGGER.setLevel(logging.INFO)
    _attached.append(handler)
    _LOGGER.addHandler(handler)
    return handler


def _detach_log(handler: logging.Handler) -> None:
    _LOGGER.removeHandler(handler)
    handler.close()
    _attached.remove(handler)
    if not _attached and _level_before:
        _LOGGER.setLevel(_level_before.pop())
