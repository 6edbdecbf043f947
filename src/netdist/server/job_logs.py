"""Job log lines from the worker streams into the store, without holding up dispatch.

The servicer hands each ``JobLogBatch`` here, cleaned. Lines for a lease that
is not the worker's current, stored one in the lease table are dropped at
once (and counted); the rest go to the group-commit writer, which fences them
again against the store (:func:`netdist.server.store.job_logs.append`) and
keeps at most the bound per lease. Nothing here is awaited on the stream's
read loop: a write is submitted and forgotten. While more than
:data:`MAX_WRITES_IN_FLIGHT` writes wait (a slow or unavailable store), new
lines are dropped rather than queued without bound: the job's result, which
the store must take, never waits behind its log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from netdist.server.clock import Clock
from netdist.server.leases import LeaseTable
from netdist.server.store import job_logs as job_log_store
from netdist.server.store.job_logs import JobLogIn
from netdist.server.store.writer import GroupCommitWriter

log = logging.getLogger("netdist.server.workers")

MAX_WRITES_IN_FLIGHT = 64


class JobLogIntake:
    def __init__(self, table: LeaseTable, writer: GroupCommitWriter, *, clock: Clock) -> None:
        self._table = table
        self._writer = writer
        self._clock = clock
        self._in_flight = 0
        self._behind = False
        self.dropped: Counter[str] = Counter()
        """Lines not kept, by why: "stale" (not the sender's current lease), "busy" (the store is behind)."""

    def take(self, worker_id: str, entries: Sequence[JobLogIn]) -> None:
        """Store what a worker's jobs logged, for its current leases only; returns at once."""
        held: list[JobLogIn] = []
        stale: list[JobLogIn] = []
        for entry in entries:
            lease = self._table.current(worker_id, (entry.job_id, entry.lease_no))
            (held if lease is not None and lease.sent else stale).append(entry)
        if stale:  # one line a message, however many it names
            for entry in stale:
                self._drop("stale", entry)
            log.info(
                "worker %s sent log lines for %d lease(s) it does not hold (job %d lease %d%s); dropped",
                worker_id,
                len(stale),
                stale[0].job_id,
                stale[0].lease_no,
                ", ..." if len(stale) > 1 else "",
            )
        if not held:
            return
        if self._in_flight >= MAX_WRITES_IN_FLIGHT:
            for entry in held:
                self._drop("busy", entry)
            if not self._behind:
                self._behind = True
                log.warning("the store is behind: job log lines are dropped until it catches up")
            return
        self._in_flight += 1
        write = self._writer.submit(job_log_store.append, worker_id, held, self._clock.time())
        write.add_done_callback(self._written)

    def _drop(self, why: str, entry: JobLogIn) -> None:
        self.dropped[why] += len(entry.lines) + entry.dropped

    def _written(self, write: asyncio.Future[int]) -> None:
        self._in_flight -= 1
        if self._behind and self._in_flight == 0:
            self._behind = False
            log.info("the store caught up: job log lines are kept again")
        if not write.cancelled() and write.exception() is not None:
            log.warning("could not store job log lines: %s", write.exception())
