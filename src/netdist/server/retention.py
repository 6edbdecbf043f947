"""Retention: how long outputs, attempt history and processed jobs are kept.

By default everything is kept until its handler is removed. ``--keep-outputs
DURATION`` clears the outputs of processed jobs and deletes attempt history
older than that; ``--keep-processed DURATION`` deletes processed and failed
jobs that finished longer ago, ``--keep-processed COUNT`` keeps only the
newest COUNT of each per handler. A background pass runs every
``interval_seconds`` (sooner after one that stopped at its limit with more to
delete, and within a second after one that deleted a batch or more) and
deletes in batches of ``BATCH`` rows through the group-commit writer,
``IN_FLIGHT`` of them queued at once, so that leases and results go on
between them. Deleted jobs still count: each handler keeps a
tally of the processed and failed jobs retention deleted (its counts add them),
and the run time of those that finished today is kept per worker, so that a
restarted server still holds each worker to ``max-time-per-client-per-day``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from datetime import datetime

from netdist.server.clock import Clock
from netdist.server.states import JobStatus
from netdist.server.store import pruning
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.retention")
BATCH = 2000
"""Rows one transaction of a pass deletes or clears at most. Each waits its turn in the writer, which
under load is a few tens of milliseconds whatever it holds: at 500 rows a pass deleted about 20,000
jobs a second, fewer than a busy server finishes (25,000 a second here), and the store grew without
bound under --keep-processed (bench/scale.py million). 2,000 rows take the writer a few milliseconds."""
MAX_BATCHES_PER_PASS = 50
"""A pass stops after this many batches that deleted or cleared something; the next pass goes on."""
IN_FLIGHT = 4
"""Batches of a handler's jobs to delete on their way to the writer at once. One at a time, each waited
its turn behind the results in a busy writer and retention fell behind: a million no-op jobs kept to the
newest 10,000 left a store of 77-94 MB, growing to the end, against 34-38 MB with 4 (bench/README.md)."""
CATCH_UP_SECONDS = 0.5
"""The wait before the next pass when one stopped at its batch limit with more to delete: a pass
deletes at most 100,000 rows, and a server finishing thousands of jobs a second makes more than
that between two passes a minute apart (its store grew without bound under --keep-processed)."""
BUSY_SECONDS = 1.0
"""The wait before the next pass, at most, when the last one deleted a batch or more without reaching its
limit: the server is finishing jobs faster than a pass an interval apart keeps in step with. Each pass then
deletes about a second's worth, not an interval's worth in one burst: a million no-op jobs kept to the newest
10,000, a pass every 5 s, took the writer from the results in bursts, and the rate over 100,000 jobs dipped to
26,000-29,000 jobs/s between 33,000-36,000 (bench/README.md)."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """``12h`` -> 43200.0; units s, m, h, d, w (a unit is required)."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 12h, 7d, 2w)")
    return float(found.group(1)) * _UNITS[found.group(2).lower()]


def day_start(now: float) -> float:
    """Unix time of the midnight that began the day of ``now``, in the server's time zone: the day
    ``policy.DailyUsage`` counts run time in."""
    today = datetime.fromtimestamp(now).astimezone().date()
    return datetime.combine(today, datetime.min.time()).astimezone().timestamp()  # as DailyUsage.day_start


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

    def __init__(
        self, store: Store, retention: Retention, clock: Clock, *, max_batches: int = MAX_BATCHES_PER_PASS
    ) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self.max_batches = max_batches
        self.deleted = 0  # jobs deleted since the start (for the log and tests)
        self._outputs_after: dict[str, int] = {}  # per handler: outputs up to this job id are dropped
        self._budget = 0  # batches that change something the running pass may still run
        self._cut = False  # the last pass stopped at its budget, with more maybe to do
        self._busy = False  # the last pass deleted a batch or more: jobs are being finished as it goes
        self._unlogged = 0  # deleted since the last log line
        self._logged_at = float("-inf")
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
            await asyncio.sleep(self.next_wait())
            self._cut = False
            if not self.store.health.healthy:
                continue  # the store is out: the server's own work comes first
            try:
                await self.run_once()
            except Exception:
                log.exception("retention pass failed; the next one tries again")

    def next_wait(self) -> float:
        """Seconds until the next pass: soon when the last stopped at its limit with more to do, within a
        second when it deleted a batch or more (BUSY_SECONDS), else the interval."""
        interval = self.retention.interval_seconds
        if self._cut:
            return min(interval, CATCH_UP_SECONDS)
        return min(interval, BUSY_SECONDS) if self._busy else interval

    async def run_once(self) -> int:
        """One pass, at most ``max_batches`` transactions that change something (a check that finds
        nothing to do is not counted: a store of many handlers would use the budget up on them); the
        jobs and attempts it deleted."""
        r = self.retention
        now = self.clock.time()
        self._budget = self.max_batches
        self._cut = False
        handler_ids = await self.store.read(pruning.handler_ids)
        done = 0
        if r.keep_processed_seconds is not None or r.keep_processed_count is not None:
            before = now - r.keep_processed_seconds if r.keep_processed_seconds is not None else None
            for handler_id in handler_ids:
                for status in (JobStatus.PROCESSED, JobStatus.FAILED):
                    done += await self._delete_jobs(handler_id, status, before)
        if r.keep_outputs_seconds is not None:
            before = now - r.keep_outputs_seconds
            for handler_id in handler_ids:
                await self._drop_outputs(handler_id, before)
            done += await self._delete_attempts(before)
        self._busy = done >= BATCH
        self._unlogged += done
        now_mono = self.clock.monotonic()
        if self._unlogged and (not self._busy or now_mono - self._logged_at >= r.interval_seconds):
            log.info("retention: %d jobs and attempts deleted", self._unlogged)  # once an interval while busy
            self._unlogged, self._logged_at = 0, now_mono
        return done

    def _may_go_on(self) -> bool:
        """Whether this pass may run one more batch; when not, it is cut short (``_cut``)."""
        if self._budget > 0:
            return True
        self._cut = True
        return False

    def _spent(self, changed: bool) -> None:
        if changed:
            self._budget -= 1

    async def _delete_jobs(self, handler_id: str, status: JobStatus, before: float | None) -> int:
        done = 0
        keep = self.retention.keep_processed_count
        upto = None
        if keep is not None:  # jobs processed during the pass stay: a few more than the count are kept
            upto = await self.store.read(pruning.newest_past, handler_id, status, keep)
            if upto is None:
                return 0
        while self._may_go_on():
            # The writer runs them in order, each after the one before it (in its transaction or the
            # next), so each finds the next rows.
            writes = [
                self.store.writer.submit(
                    pruning.delete_jobs,
                    handler_id,
                    status,
                    finished_before=before,
                    upto_id=upto,
                    batch=BATCH,
                    day_start=day_start(self.clock.time()),
                )
                for _ in range(min(IN_FLIGHT, self._budget))
            ]
            n = 0
            for answer in await asyncio.gather(*writes, return_exceptions=True):  # none left unawaited
                if isinstance(answer, BaseException):
                    raise answer
                n = answer
                self._spent(n > 0)
                done += n
                self.deleted += n
            if n < BATCH:  # the last batch found fewer: nothing more to delete
                break
        return done

    async def _drop_outputs(self, handler_id: str, before: float) -> None:
        while self._may_go_on():
            after = self._outputs_after.get(handler_id, 0)
            reached = await self.store.writer.run(
                pruning.drop_outputs, handler_id, after_id=after, finished_before=before, batch=BATCH
            )
            self._spent(reached != after)
            self._outputs_after[handler_id] = reached
            if reached == after:
                break

    async def _delete_attempts(self, before: float) -> int:
        done = 0
        while self._may_go_on():
            n = await self.store.writer.run(pruning.delete_attempts, finished_before=before, batch=BATCH)
            self._spent(n > 0)
            done += n
            if n < BATCH:
                break
        return done
