"""Job ids, chosen by the server before their jobs are stored, and never twice.

A new job may be leased while the transaction that stores it is on the way
(server/runtime.py): a worker then holds a lease naming an id that the store
does not hold yet, and never will if the server dies before that commit. No
later job may get that id, or the stale lease's result could pass for that
job's. So ids come from blocks reserved in the store (``counters.next_job_id``,
``store.jobs.reserve_job_ids``), each committed before any id in it is used: a
restarted server starts past every block its predecessor reserved, and the ids
it left unused are never used.

One reservation is a commit of its own, so they are large (:data:`BLOCK`), and
the next is reserved while half of the current block is left: a handler seldom
waits for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from netdist.server.store import jobs as job_store
from netdist.server.store.writer import GroupCommitWriter

log = logging.getLogger("netdist.server.job_ids")
BLOCK = 10_000


class JobIds:
    def __init__(self, writer: GroupCommitWriter, *, block: int = BLOCK) -> None:
        self._writer = writer
        self._block = block
        self._ranges: deque[range] = deque()  # reserved and committed, not handed out yet
        self._left = 0
        self._reserving: asyncio.Task[None] | None = None

    def prefetch(self) -> None:
        """Reserve the next block now, unless one is on the way (at start, before the first job)."""
        self._reservation(self._block)

    async def take(self, count: int) -> list[int]:
        """``count`` ids, ascending, each committed as reserved; waits for a reservation only when
        the reserved ones run out (and raises what it raised: the store is unavailable and the
        server stops)."""
        while self._left < count:
            await asyncio.shield(self._reservation(count))
        ids: list[int] = []
        while len(ids) < count:
            first = self._ranges[0]
            n = min(count - len(ids), len(first))
            ids.extend(first[:n])
            if n == len(first):
                self._ranges.popleft()
            else:
                self._ranges[0] = first[n:]
        self._left -= count
        if self._left < self._block // 2:
            self._reservation(self._block)
        return ids

    def _reservation(self, at_least: int) -> asyncio.Task[None]:
        if self._reserving is None:
            self._reserving = asyncio.create_task(self._reserve(max(self._block, at_least)), name="job-ids")
            self._reserving.add_done_callback(_retrieved)
        return self._reserving

    async def _reserve(self, count: int) -> None:
        try:
            ids = await self._writer.run(job_store.reserve_job_ids, count)
        finally:
            self._reserving = None
        self._ranges.append(ids)
        self._left += len(ids)


def _retrieved(task: asyncio.Task[None]) -> None:
    """A prefetch nobody awaited failed (the server is stopping): said once, at debug."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("reserving job ids failed: %s", exc)
