"""The event hub: what changes on the server, fanned out to the watchers of ``AdminService.Watch``.

Two kinds of change reach it:

- pushed: a handler created, replaced, changed state or removed; a worker
  connected, disconnected, disabled, enabled or removed. Each is an event of
  its own, never merged with another, in the order it happened.
- sampled: a handler's total and summary when it saved its work (the newest
  wins, like the samples below), job counts per handler and running jobs (with their progress) per
  worker, read from the lease table in memory every ``interval_seconds`` while
  someone watches. At most one event per handler or worker per interval, and
  only when it changed: a busy dispatcher does not make an event per job, and
  nothing is sampled while no one watches.

Watchers are woken once per interval (:meth:`EventHub.tick`), pushed events
included, so each is sent at most one response per interval; the interval is
50 ms and grows with the number of watchers so that all of them together get at
most MAX_SENDS_PER_SECOND responses (200 watchers: one a second each).

Each watcher has a bounded backlog (:class:`Watcher`): the events it has not
taken yet, in order, where a sampled event replaces the pending one of the same
handler or worker (the newest counts win). Publishing is a dict write per
watcher and never waits for one: a watcher that does not read holds at most
one sampled event per handler and worker plus the pushed events, and once its
backlog passes ``max_backlog`` it is cut off (``overflowed``): its stream ends
with RESOURCE_EXHAUSTED and the client watches again for a fresh snapshot.

A pushed handler event is preceded by that handler's counts when they changed
since the last sample, so a watcher sees the final counts before ``finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Hashable, Mapping

from netdist.errors import ResourceExhaustedError
from netdist.server.clock import Clock
from netdist.server.lease_book import LeaseBook
from netdist.server.states import JobStatus

log = logging.getLogger("netdist.server.event_hub")

INTERVAL_SECONDS = 0.05
"""How often counts and progress are sampled and watchers are sent what changed, while few watch."""
MAX_SENDS_PER_SECOND = 200.0
"""What all watchers together are sent at most per second: with more than 10 watchers the interval
grows (200 watchers: one send each per second), so that hundreds of them cannot slow dispatch (each
send costs the server's event loop about 0.1 ms)."""
MAX_WATCHERS = 500
"""Watch streams one server serves at once; the next is refused with RESOURCE_EXHAUSTED."""
MAX_BACKLOG = 10_000
"""Events a watcher may leave untaken before its stream is ended (RESOURCE_EXHAUSTED)."""
MAX_RUNNING_SHOWN = 20
"""Running jobs one progress event lists per worker (its count is exact): what a dashboard shows, and
small, since every watcher is sent it."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerChange:
    handler_id: str
    change: str  # created, replaced, state, removed
    state: str
    message: str = ""
    job_name: str = ""
    package: str = ""
    handler: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobCounts:
    handler_id: str
    available: int
    pending: int  # leased, or with a result the handler has not processed yet
    processed: int
    failed: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerSummary:
    """What the handler says of itself: its total (None: unknown) and summary."""

    handler_id: str
    total: int | None
    summary: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerChange:
    worker_id: str
    change: str  # connected, disconnected, disabled, enabled, removed
    name: str = ""
    slots: int = 0
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hostname: str = ""
    version: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunningJob:
    job_id: int
    handler_id: str
    attempt: int
    leased_at: float
    percent: float
    text: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerProgress:
    worker_id: str
    jobs_running: int
    running: tuple[RunningJob, ...]


Event = HandlerChange | JobCounts | HandlerSummary | WorkerChange | WorkerProgress


@dataclasses.dataclass(slots=True)
class Stamped:
    at: float  # Unix time
    event: Event
    wire: object = None  # the servicer's encoding of it, made once for every watcher


class Watcher:
    """One watcher's backlog: pending events in order, bounded."""

    def __init__(self, max_backlog: int) -> None:
        self.max_backlog = max_backlog
        self.overflowed = False
        self.closed = False  # the server is stopping: the stream ends
        self._pending: dict[Hashable, Stamped] = {}
        self._serial = itertools.count()
        self._ready = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def flush(self) -> None:
        """Wake the reader if anything is pending (once per interval, from the hub)."""
        if self._pending:
            self._ready.set()

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, key: Hashable | None, item: Stamped) -> None:
        """``key`` None: a pushed event, kept on its own; else it replaces the pending one of that key, and
        goes where a new one would: last, so that what the watcher is sent stays in the order of ``at``."""
        if self.overflowed:
            return
        if key is not None and key in self._pending:
            del self._pending[key]
            self._pending[key] = item
            return
        if len(self._pending) >= self.max_backlog:
            self.overflowed = True
            self._pending.clear()
            self._ready.set()
            return
        self._pending[next(self._serial) if key is None else key] = item

    async def take(self) -> list[Stamped]:
        """Every pending event, oldest first, once there is one (or the watcher overflowed: then [])."""
        await self._ready.wait()
        self._ready.clear()
        batch = list(self._pending.values())
        self._pending.clear()
        return batch


class EventHub:
    """The watchers, what is pushed to them, and the sampler of the lease table."""

    def __init__(
        self,
        table: LeaseBook,
        *,
        clock: Clock,
        interval_seconds: float = INTERVAL_SECONDS,
        max_sends_per_second: float = MAX_SENDS_PER_SECOND,
        max_watchers: int = MAX_WATCHERS,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.table = table
        self.clock = clock
        self.min_interval_seconds = interval_seconds
        self.max_sends_per_second = max_sends_per_second
        self.max_watchers = max_watchers
        self.max_backlog = max_backlog
        self._watchers: set[Watcher] = set()
        self._counts: dict[str, JobCounts] = {}  # as last sent, per handler
        self._progress: dict[str, WorkerProgress] = {}  # as last sent, per worker
        self._summaries: dict[str, HandlerSummary] = {}  # as last sent, per handler
        self._sampler: asyncio.Task[None] | None = None

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    @property
    def interval_seconds(self) -> float:
        """Between two sends to a watcher: INTERVAL_SECONDS, longer with many watchers."""
        return max(self.min_interval_seconds, len(self._watchers) / self.max_sends_per_second)

    # -- watchers ------------------------------------------------------------------------------

    def subscribe(self) -> Watcher:
        """A new watcher (take its snapshot after this, so that nothing falls between the two)."""
        if len(self._watchers) >= self.max_watchers:
            raise ResourceExhaustedError(
                f"this server already serves {self.max_watchers} watch streams, the most it takes; "
                "close one (netdist-admin watch or events --follow) and try again"
            )
        watcher = Watcher(self.max_backlog)
        if self._sampler is None or self._sampler.done():
            # The first watcher: what is now goes into its snapshot, not into events; sample it unsent.
            others, self._watchers = self._watchers, set()
            self.sample()
            self._watchers = others
            self._sampler = asyncio.create_task(self._sample_loop(), name="netdist-event-sampler")
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    async def stop(self) -> None:
        """The server stops: every watch stream ends now (not at the end of the server's grace)."""
        for watcher in self._watchers:
            watcher.close()
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    # -- pushed --------------------------------------------------------------------------------

    def handler_changed(self, change: HandlerChange) -> None:
        if not self._watchers:
            return
        self._sample_handler(change.handler_id)
        self._offer(None, change)

    def handler_gone(self, handler_id: str) -> None:
        """The lease table forgets the handler (stopped, finished, removed): its last counts go out now."""
        if self._watchers:
            self._sample_handler(handler_id)
        self._counts.pop(handler_id, None)
        self._summaries.pop(handler_id, None)

    def handler_summary(self, summary: HandlerSummary) -> None:
        """The handler saved its work (a batch of results, new jobs): its total and summary, if changed."""
        if self._watchers and self._summaries.get(summary.handler_id) != summary:
            self._summaries[summary.handler_id] = summary
            self._offer(("summary", summary.handler_id), summary)

    def worker_changed(self, change: WorkerChange) -> None:
        if not self._watchers:
            return
        if change.change == "connected":  # then its running jobs (after a reconnect: those it kept)
            self._offer(None, change)
            self._sample_worker(change.worker_id, quiet_when_idle=True)
        else:  # its last progress, then the change
            self._sample_worker(change.worker_id)
            self._offer(None, change)

    # -- sampled -------------------------------------------------------------------------------

    async def _sample_loop(self) -> None:
        try:
            while self._watchers:
                await asyncio.sleep(self.interval_seconds)
                self.tick()
        except Exception:
            log.exception("event sampler failed")
        finally:
            self._counts.clear()  # a watcher that comes later gets everything that differs from its snapshot
            self._progress.clear()
            self._summaries.clear()

    def tick(self) -> None:
        """Sample, then wake every watcher that has something: one send each per interval at most."""
        self.sample()
        for watcher in self._watchers:
            watcher.flush()

    def sample(self) -> None:
        """Counts of every handler in the lease table and running jobs of every worker, where changed."""
        for handler_id in list(self.table.handlers):
            self._sample_handler(handler_id)
        for worker_id in list(self.table.workers):
            self._sample_worker(worker_id)
        for worker_id in set(self._progress) - set(self.table.workers):
            self._sample_worker(worker_id)

    def _sample_handler(self, handler_id: str) -> None:
        queue = self.table.handlers.get(handler_id)
        if queue is None:
            return
        c = queue.shown()  # as ListHandlers shows them: with those retention deleted
        counts = JobCounts(
            handler_id=handler_id,
            available=c.get(JobStatus.AVAILABLE, 0),
            pending=sum(c.get(s, 0) for s in (JobStatus.LEASED, JobStatus.SUCCEEDED, JobStatus.ERRORED)),
            processed=c.get(JobStatus.PROCESSED, 0),
            failed=c.get(JobStatus.FAILED, 0),
        )
        if self._counts.get(handler_id) != counts:
            self._counts[handler_id] = counts
            self._offer(("counts", handler_id), counts)

    def _sample_worker(self, worker_id: str, *, quiet_when_idle: bool = False) -> None:
        state = self.table.workers.get(worker_id)
        running: tuple[RunningJob, ...] = ()
        if state is not None:
            leases = self.table.leases_of(worker_id=worker_id)[:MAX_RUNNING_SHOWN]
            running = tuple(
                RunningJob(
                    job_id=lease.job_id,
                    handler_id=lease.handler_id,
                    attempt=lease.attempt,
                    leased_at=lease.leased_at,
                    percent=lease.progress_percent,
                    text=lease.progress_text,
                )
                for lease in leases
            )
        progress = WorkerProgress(
            worker_id=worker_id, jobs_running=len(state.jobs) if state is not None else 0, running=running
        )
        if state is None:
            if self._progress.pop(worker_id, None) is not None and progress.jobs_running == 0:
                self._offer(("progress", worker_id), progress)
            return
        if self._progress.get(worker_id) != progress:
            self._progress[worker_id] = progress
            if progress.jobs_running or not quiet_when_idle:
                self._offer(("progress", worker_id), progress)

    def _offer(self, key: Hashable | None, event: Event) -> None:
        item = Stamped(self.clock.time(), event)
        for watcher in self._watchers:
            watcher.offer(key, item)
