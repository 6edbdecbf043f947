"""Stored results handed to their handler's runtime from memory, instead of read back.

The result write reads back, in its own transaction, what the handler needs
(input, extra) and the dispatcher puts it here as soon as the write ran, before
its commit, with a future that answers once the lease table counted the
write's results stored (or raises: they were not). The handler may process them
while the commit waits for the disk; what it did with them is written behind that
write, and only if they are stored as succeeded by then (``jobs.record_batch``'s
``handed``), so nothing the handler did with a result is stored before the
result; the runtime awaits the future (``Taken.stored``) before it counts them
processed. The runtime takes it from here
and reads the store only when this is empty and the lease table still counts
results, or once a quiet second. A result must never reach the handler twice,
so memory and the store's reads are ordered by the writer: every result write
and every read of unprocessed results draws a number (``jobs.writer_seq``) as
the one writer thread runs it. A read at number R saw every result written
below R, so entries below R are dropped when it happens and refused if they
arrive later; an entry above R was not in that read. The runtime takes a batch,
and queues the write that marks it processed, before it reads again (its loop is
one task): the writer runs that write before the read.

Dropping an entry is always safe: its job stays succeeded in the store, and
a later read hands it over. So the inbox is bounded (entries per handler,
bytes in all) and what does not fit is simply left to the store.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from netdist.server.host_protocol import StoredResult

MAX_PER_HANDLER = 8000
"""Results one handler's inbox holds; four of the runtime's largest batches (runtime.RESULT_BATCH)."""
MAX_BYTES = 64 * 1024 * 1024
"""Bytes of input, output and extra all inboxes hold together."""


class Taken(NamedTuple):
    """Results taken for the handler, and the answers of the writes that store them."""

    items: list[StoredResult]
    stored: list[asyncio.Future[None]]


def _size(item: StoredResult) -> int:
    return len(item.input_json) + len(item.output_json) + len(item.extra_json) + 64


class ResultInbox:
    def __init__(self, *, max_per_handler: int = MAX_PER_HANDLER, max_bytes: int = MAX_BYTES) -> None:
        self._max_per_handler = max_per_handler
        self._max_bytes = max_bytes
        self._items: dict[str, deque[tuple[int, StoredResult, int, asyncio.Future[None]]]] = {}
        """Per handler: (the write's number, the result, its size, the write's answer) each."""
        self._read_at: dict[str, int] = {}  # per handler, the number of its last read of the store
        self.nbytes = 0

    def put(self, handler_id: str, seq: int, items: Iterable[StoredResult], stored: asyncio.Future[None]) -> None:
        """Results of the write numbered ``seq``; ``stored`` answers when they are committed and counted."""
        if seq < self._read_at.get(handler_id, 0):
            return  # a read of the store saw them: it hands them over
        queue = self._items.setdefault(handler_id, deque())
        for item in items:
            size = _size(item)
            if len(queue) >= self._max_per_handler or self.nbytes + size > self._max_bytes:
                break  # left to the store
            queue.append((seq, item, size, stored))
            self.nbytes += size
        if not queue:
            del self._items[handler_id]

    def count(self, handler_id: str) -> int:
        """Results waiting for ``handler_id``."""
        queue = self._items.get(handler_id)
        return 0 if queue is None else len(queue)

    def take(self, handler_id: str, limit: int) -> Taken:
        """Up to ``limit`` results, in the order they were written."""
        queue = self._items.get(handler_id)
        out: list[StoredResult] = []
        stored: list[asyncio.Future[None]] = []
        while queue and len(out) < limit:
            _, item, size, write = queue.popleft()
            out.append(item)
            if not stored or stored[-1] is not write:
                stored.append(write)
            self.nbytes -= size
        if queue is not None and not queue:
            del self._items[handler_id]
        return Taken(out, stored)

    def read_store(self, handler_id: str, seq: int) -> None:
        """The runtime read the handler's unprocessed results from the store at number ``seq``."""
        self._read_at[handler_id] = max(seq, self._read_at.get(handler_id, 0))
        queue = self._items.get(handler_id)
        while queue and queue[0][0] < seq:
            self.nbytes -= queue.popleft()[2]
        if queue is not None and not queue:
            del self._items[handler_id]

    def forget(self, handler_id: str) -> None:
        """The handler's runtime ended (stopped, failed, removed): the store has them all. Its last
        read's number stays (an int per handler): a late entry from before it is still refused."""
        for _, _, size, _ in self._items.pop(handler_id, ()):
            self.nbytes -= size

    def __len__(self) -> int:
        return sum(len(q) for q in self._items.values())
