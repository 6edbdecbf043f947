"""Retention: how long outputs, attempt history and processed jobs are kept.

By default everything is kept until its handler is removed. ``--keep-outputs
DURATION`` clears the outputs of processed jobs and deletes attempt history
older than that; ``--keep-processed DURATION`` deletes processed and failed
jobs that finished longer ago, ``--keep-processed COUNT`` keeps only the
newest COUNT of each per handler. A background pass runs every
``interval_seconds`` and deletes in batches of ``BATCH`` rows, each its own
short transaction through the group-commit writer, yielding between them so
that leases and results go on. Deleted jobs still count: each handler keeps a
tally of the processed and failed jobs retention deleted (its counts add them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re

from netdist.server.clock import Clock
from netdist.server.states import JobStatus
from netdist.server.store import pruning
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.retention")
BATCH = 500
"""Rows one transaction of a pass deletes or clears at most."""
MAX_BATCHES_PER_PASS = 200
"""A pass stops after this many batches; the next pass goes on."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """``12h`` -> 43200.0; units s, m, h, d, w (a unit is required)."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 12h, 7d, 2w)")
    return float(found.group(1)) * _UNITS[found.group(2).lower()]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    keep_outputs_seconds: float | None = None
    """Outputs of processed jobs and attempt history older than this are dropped; None: kept."""
    keep_processed_seconds: float | None = None
    """Processed and failed jobs that finished longer ago are deleted; None: by count, or kept."""
    keep_processed_count: int | None = None
    """Only the newest this many processed (and as many failed) jobs per handler are kept; None: all."""
    interval_seconds: float = 60.0

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.keep_outputs_seconds, self.keep_processed_seconds, self.keep_processed_count)
        )


class Pruner:
    """Runs the retention passes in the background while the server serves."""

    def __init__(self, store: Store, retention: Retention, clock: Clock) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self.deleted = 0  # jobs deleted since the start (for the log and tests)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention.active:
            self._task = asyncio.create_task(self._loop(), name="netdist-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention.interval_seconds)
            if not self.store.health.healthy:
                continue  # the store is out: the server's own work comes first
            try:
                await self.run_once()
            except Exception:
                log.exception("retention pass failed; the next one tries again")

    async def run_once(self) -> int:
        """One pass; the rows it deleted or cleared."""
        r = self.retention
        now = self.clock.time()
        budget = MAX_BATCHES_PER_PASS
        done = 0
        if r.keep_processed_seconds is not None or r.keep_processed_count is not None:
            before = now - r.keep_processed_seconds if r.keep_processed_seconds is not None else None
            for handler_id in await self.store.writer.run(pruning.handler_ids):
                for status in (JobStatus.PROCESSED, JobStatus.FAILED):
                    while budget > 0:
                        budget -= 1
                        n = await self.store.writer.run(
                            pruning.delete_jobs,
                            handler_id,
                            status,
                            finished_before=before,
                            keep_newest=r.keep_processed_count,
                            batch=BATCH,
                        )
                        done += n
                        self.deleted += n
                        if n < BATCH:
                            break
        if r.keep_outputs_seconds is not None:
            before = now - r.keep_outputs_seconds
            for op in (pruning.drop_outputs, pruning.delete_attempts):
                while budget > 0:
                    budget -= 1
                    n = await self.store.writer.run(op, finished_before=before, batch=BATCH)
                    done += n
                    if n < BATCH:
                        break
        if done:
            log.info("retention: %d rows deleted or cleared", done)
        return done
