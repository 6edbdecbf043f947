"""Handler log lines: buffered in memory, written to the store in batches, pruned now and then.

Lines come from the server (state changes, schedules) and from handler hosts
(what a handler logs), often many at once; one write per flush carries them
all. A flush during a store outage waits for the store (``writer.run``), so no
line is lost to it; lines logged meanwhile wait for the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection

from netdist.server.clock import Clock
from netdist.server.store import catalog
from netdist.server.store.writer import GroupCommitWriter

log = logging.getLogger("netdist.server.manager")
FLUSH_SECONDS = 0.2
PRUNE_EVERY_FLUSHES = 300  # about once a minute
MAX_MESSAGE = 10_000
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class HandlerLog:
    """The handler log's buffer and the task that flushes it (``start`` / ``stop``)."""

    def __init__(self, writer: GroupCommitWriter, *, clock: Clock) -> None:
        self._writer = writer
        self._clock = clock
        self._buffer: list[dict[str, object]] = []
        self._task: asyncio.Task[None] | None = None

    def __call__(self, handler_id: str, level: str, source: str, message: str) -> None:
        """Log one line (a ``LogSink``): to the server's own log at once, to the store with the next flush."""
        log.log(LEVELS.get(level, logging.INFO), "[%s] %s", handler_id, message)
        self._buffer.append(
            {
                "handler_id": handler_id,
                "at": self._clock.time(),
                "level": level,
                "source": source,
                "message": message[:MAX_MESSAGE],
            }
        )

    @property
    def pending(self) -> int:
        """Lines logged and not yet handed to the store."""
        return len(self._buffer)

    async def flush(self, *, prune: Collection[str] = ()) -> None:
        """Write the buffered lines; then keep only the newest lines of each handler in ``prune``."""
        entries, self._buffer = self._buffer, []
        if entries:
            await self._writer.run(catalog.add_log, entries)
        for handler_id in prune:
            await self._writer.run(catalog.prune_log, handler_id)

    def start(self, running: Callable[[], Collection[str]]) -> None:
        """Flush every FLUSH_SECONDS; prune the logs of the ``running`` handlers now and then."""
        self._task = asyncio.create_task(self._flush_loop(running), name="netdist-handler-log")

    async def stop(self) -> None:
        """End the flush task, then write what is left."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _flush_loop(self, running: Callable[[], Collection[str]]) -> None:
        flushes = 0
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            flushes += 1
            prune = list(running()) if flushes % PRUNE_EVERY_FLUSHES == 0 else []
            try:
                await self.flush(prune=prune)
            except Exception:  # the store gave up on the write; its outage is logged by the store
                log.debug("handler log flush failed", exc_info=True)
