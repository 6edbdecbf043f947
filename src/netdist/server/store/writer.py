"""Group commit: one thread owns the write connection and commits in batches.

Async code submits an operation (a function of a Connection) and awaits its
result. The thread takes every operation waiting, runs them all in one
transaction and commits once; if that transaction fails, it runs each
operation alone so that one bad operation fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

log = logging.getLogger("netdist.store")
T = TypeVar("T")
Op = Callable[[Connection], Any]
_MAX_OPS = 512


class GroupCommitWriter:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="netdist-store-writer", daemon=True)
        self.commits = 0
        self._thread.start()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in the next group transaction; returns after the commit."""
        return await self.submit(fn, *args, **kwargs)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Queue ``fn(conn, *args, **kwargs)`` now (operations run in the order submitted);
        the future resolves after the commit. Call from the event loop."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((lambda conn: fn(conn, *args, **kwargs), future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < _MAX_OPS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        try:
            with self._engine.connect() as conn:
                conn.info["write"] = True
                with conn.begin():
                    results = [op(conn) for op, _ in batch]
            self.commits += 1
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            for item in batch:
                self._commit([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    loop = future.get_loop()

    def apply() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(apply)
    except RuntimeError:  # loop closed during shutdown
        log.debug("store result dropped: event loop closed")
