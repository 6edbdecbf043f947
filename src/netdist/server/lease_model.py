"""What the lease table speaks and keeps: leases, results in, the effects of its
transitions, and its record of each running handler and each worker.

No behaviour here beyond small helpers; see :mod:`netdist.server.leases`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple

from netdist.jobscript import JobSettings
from netdist.server.states import JobStatus

Ref = tuple[int, int]
"""(job id, lease number): names exactly one lease of one job."""

MAX_PREFETCH = 4096
"""The most leases beyond its slots the server lets a worker hold, whatever it asks. Reached only by jobs
shorter than about 12 µs (PREFETCH_SECONDS per slot by their run time), whose way through the worker
costs more than their run: 4,096 of them are 0.3-0.4 s of a worker's work, enough to ride out the
server's pauses (a group commit, a handler's batch). At 1,024 a worker ran dry between lease batches
(bench/README.md: 12-19% fewer jobs/s in 20,000-job runs)."""
PREFETCH_SECONDS = 0.05
"""A worker may hold about this much queued work per slot beyond its slots."""
RETRY_ELSEWHERE_SECONDS = 5.0
"""A job that failed on a worker (it raised, ran past its job-timeout, or was lost with the worker) waits
this long at most for another eligible worker before it may go back to one it failed on: a broken host
would otherwise burn every attempt of the jobs it fails (they go back to the front of the queue, and it
is the first to have room again, having just ended them)."""


def prefetch_bound(slots: int, ewma_seconds: float | None) -> int:
    """Leases beyond ``slots`` for jobs of this run time: about PREFETCH_SECONDS of them per slot, at most
    MAX_PREFETCH; none while the run time is unknown."""
    if ewma_seconds is None:
        return 0
    per_slot = PREFETCH_SECONDS / ewma_seconds if ewma_seconds > 0 else math.inf
    return int(min(MAX_PREFETCH, slots * per_slot))


class ReadyJob(NamedTuple):
    """An available job as queued in memory: what a lease needs to go out (a NamedTuple: built once
    per job, a third of a frozen dataclass's cost)."""

    job_id: int
    lease_no: int  # its lease number (or one sent and never stored); the next lease takes lease_no + 1
    attempts: int  # attempts charged so far
    input: bytes
    stored: bool = True
    """The store holds it available at exactly this lease number, so its next lease may go to the
    worker before that lease's commit (see :mod:`netdist.server.leases`). False while the write that
    put it back is on the way, or after a lease write failed."""
    extra: str | None = None
    """Its extra (JSON text) when short (:func:`short_extra`), so that its result reaches the handler
    without reading the job back; None: read back."""


class Retry(NamedTuple):
    """A job that failed on a worker, held aside (``HandlerQueue.held``) until another one takes it."""

    job: ReadyJob
    until: float  # monotonic: from then on the workers it failed on may take it too


EXTRA_KEPT_CHARS = 256
"""An extra this long at most goes along with its job in memory (most are ``null``)."""


def short_extra(extra: str) -> str | None:
    """``extra`` if it is short enough to keep with its job in memory, else None."""
    return extra if len(extra) <= EXTRA_KEPT_CHARS else None


class AckOutcome(StrEnum):
    """The answer to each result a worker sends."""

    ACCEPTED = "accepted"  # stored; it counts
    DUPLICATE = "duplicate"  # this result was stored before
    STALE = "stale"  # not the job's current lease held by this worker: dropped, nothing changed
    UNKNOWN = "unknown"  # no such job


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # for the current lease, from its holder: to be stored
    IN_FLIGHT = "in_flight"  # the same result is being stored already: its ack answers this one too
    NOT_CURRENT = "not_current"  # not this worker's current lease: the store tells duplicate, stale or unknown


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerSpec:
    """What the table needs to know of a running handler instance."""

    handler_id: str
    job_name: str
    settings: JobSettings
    script_sha256: str
    environment: tuple[str, ...]
    script_name: str = ""  # the job script's file name, as the worker loads it
    environments: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Per worker platform key (netdist.platforms), where its wheels differ from ``environment``."""
    platform_locked: bool = False
    """Its job script has a dependency lock: a worker that reported a platform the lock does not serve
    (yet: being resolved; or not at all: no wheel for it) gets none of its jobs."""

    def serves(self, platform_key: str) -> bool:
        return not self.platform_locked or not platform_key or platform_key in self.environments


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    worker_id: str
    name: str
    labels: Mapping[str, str]
    slots: int
    platform: str = ""  # its wheel platform's key (netdist.platforms), "" when it reported none


@dataclasses.dataclass(slots=True)
class Lease:
    """A lease the table holds. Positional fields (not ``kw_only``): ``LeasePicker._lease`` makes one per job,
    positionally, in this order, at 320 ns against 735 with keywords; elsewhere they are named."""

    job_id: int
    lease_no: int
    handler_id: str
    worker_id: str
    attempt: int  # attempts charged before this lease, plus one
    input: bytes
    leased_at: float  # wall time, for people
    leased_mono: float
    stored: bool = False  # committed to the store, or held lazily (``written`` False)
    written: bool = True
    """The store's row shows this lease, or will once its write commits. False: held lazily (its job
    stored available one number below it, as when it was leased), written only if it outlasts
    --lease-write-delay or the server stops (server/leases.py)."""
    sent: bool = False  # on its way to the worker (at once when its job was stored as it is, else once stored)
    extra: str | None = None  # the job's short extra (ReadyJob.extra); None: read back with its result
    deadline: float | None = None  # monotonic; job timeout
    started_mono: float | None = None
    settling: bool = False  # a result for it is being stored
    cancelled: Mapping[str, str] | None = None  # ended while its write was on the way: requeued once stored
    progress_percent: float = 0.0
    progress_text: str = ""

    @property
    def ref(self) -> Ref:
        return (self.job_id, self.lease_no)


class ResultIn(NamedTuple):
    """A result as a worker sent it (a NamedTuple: built once per job, cheaply)."""

    job_id: int
    lease_no: int
    output: str | None  # JSON text, when the job succeeded
    error: Mapping[str, str] | None  # type, message, traceback
    duration_seconds: float

    @property
    def ref(self) -> Ref:
        return (self.job_id, self.lease_no)


class Settlement(NamedTuple):
    """An accepted result: how the store records it."""

    result: ResultIn
    handler_id: str
    worker_id: str
    status: JobStatus  # SUCCEEDED, ERRORED (out of attempts) or AVAILABLE (to be retried)
    input: bytes | None = None
    """The job's input as leased, and its extra (both known: its handler gets the result without the
    job being read back)."""
    extra: str | None = None
    leased_at: float | None = None
    """The lease's wall time, written with the result (a lease held lazily has none in the store); None:
    the store's is kept."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Requeue:
    """A lease that ended without a result: the job goes back, or fails for good when out of attempts."""

    job_id: int
    lease_no: int  # the lease ended; the job is available again at lease_no + 1
    handler_id: str
    worker_id: str
    charged: bool  # the lease had started: it costs an attempt
    final: bool  # out of attempts: the job is errored
    error: Mapping[str, str]
    started: bool = False  # the worker had begun to run it (kept in the job's attempt history)
    leased_at: float | None = None  # the lease's wall time (for a lease held lazily); None: the store's


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    worker_id: str
    refs: tuple[Ref, ...]
    reason: str


@dataclasses.dataclass(slots=True)
class Effects:
    """What a transition asks of the caller: store writes, messages, wake-ups."""

    requeues: list[Requeue] = dataclasses.field(default_factory=list)
    revocations: list[Revocation] = dataclasses.field(default_factory=list)
    streaks: dict[str, int] = dataclasses.field(default_factory=dict)  # handler -> failed in a row, to store
    failing: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    """Handlers that reached max-sequenced-errors: the failed results in a row, and the last one's error as
    ``Type: message``."""
    wake: set[str] = dataclasses.field(default_factory=set)  # handlers with results or failures to process
    silent: list[str] = dataclasses.field(default_factory=list)  # connected workers that stopped talking
    waited: list[float] = dataclasses.field(default_factory=list)
    """Seconds from lease to start of the leases whose start a result told (for the metrics)."""
    pick: bool = False  # a job held away from the workers it failed on may go to them now: pick again

    def revoke(self, leases: Sequence[Lease], reason: str) -> None:
        by_worker: dict[str, list[Ref]] = {}
        for lease in leases:
            if lease.sent:  # an unsent lease is not the worker's to stop
                by_worker.setdefault(lease.worker_id, []).append(lease.ref)
        self.revocations += [Revocation(worker_id=w, refs=tuple(r), reason=reason) for w, r in by_worker.items()]


def shown_counts(counts: Mapping[str, int], pruned: tuple[int, int]) -> dict[str, int]:
    """A handler's jobs per status as an operator sees them: processed and failed include the ones
    retention deleted (``pruned``: processed, failed), so the numbers shown never drop."""
    shown = {status: n for status, n in counts.items() if n}
    for status, n in zip((JobStatus.PROCESSED, JobStatus.FAILED), pruned, strict=True):
        if n:
            shown[status] = shown.get(status, 0) + n
    return shown


@dataclasses.dataclass(slots=True)
class HandlerQueue:
    """A running handler instance as the table sees it: its queue, counts and streak."""

    spec: HandlerSpec
    active: bool = False  # running, not paused: may hand out jobs
    ready: deque[ReadyJob] = dataclasses.field(default_factory=deque)
    queued: set[int] = dataclasses.field(default_factory=set)
    """Job ids in ``ready`` or ``held`` (both skip the others: a job leaves this set when it is leased)."""
    held: dict[frozenset[str], dict[int, Retry]] = dataclasses.field(default_factory=dict)
    """Jobs that failed on a worker, by the workers they failed on, oldest first: out of ``ready``, so that
    its pop costs nothing more while no job failed. ``LeasePicker`` gives them first, each to a worker it
    did not fail on, or to one it did after RETRY_ELSEWHERE_SECONDS or when no other is there to take it."""
    failed_on: dict[int, frozenset[str]] = dataclasses.field(default_factory=dict)
    """Jobs out of ``held`` on a lease: the workers they failed on, added to if the lease fails too
    (``LeaseBook._hold``); forgotten once the job is no longer leased (``LeaseBook.forget_failures``)."""
    ready_bytes: int = 0  # the inputs' bytes of every job in ``ready``, skipped ones included
    cursor: int = 0  # the highest job id loaded from the store
    more_in_store: bool = True
    refilling: bool = False
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    pruned: tuple[int, int] = (0, 0)
    """Processed and failed jobs retention had deleted when ``counts`` were taken from the store (it
    deletes rows, not what the table counted since): the shown totals add them (:meth:`shown`)."""
    pass_value: float = 0.0  # stride scheduling: the lowest goes next
    streak: int = 0  # failed results in a row
    failing: bool = False  # reached max-sequenced-errors: hands out nothing
    ewma_seconds: float | None = None
    """Its jobs' run time as workers report it, any worker: bounds the prefetch of its jobs (``room_for``)."""

    @property
    def handler_id(self) -> str:
        return self.spec.handler_id

    @property
    def settings(self) -> JobSettings:
        return self.spec.settings

    def shown(self) -> dict[str, int]:
        return shown_counts(self.counts, self.pruned)

    @property
    def on_probation(self) -> bool:
        """After a failure, until a success: no prefetch, at most one job per free slot."""
        return self.streak > 0

    def push_front(self, job: ReadyJob) -> None:
        if job.job_id not in self.queued:
            self.queued.add(job.job_id)
            self.ready.appendleft(job)
            self.ready_bytes += len(job.input)

    def push_back(self, job: ReadyJob) -> None:
        self.queued.add(job.job_id)
        self.ready.append(job)
        self.ready_bytes += len(job.input)

    def hold(self, job: ReadyJob, failed_on: frozenset[str], until: float) -> None:
        """Queue a job that failed on the workers ``failed_on``: held away from them until ``until``."""
        if job.job_id not in self.queued:
            self.queued.add(job.job_id)
            self.held.setdefault(failed_on, {})[job.job_id] = Retry(job, until)

    def pop(self) -> ReadyJob | None:
        while self.ready:
            job = self.ready.popleft()
            self.ready_bytes -= len(job.input)
            if job.job_id in self.queued:
                self.queued.discard(job.job_id)
                return job
        return None


@dataclasses.dataclass(slots=True)
class WorkerState:
    info: WorkerInfo
    connected: bool = True
    capacity: int = 0  # what the worker asked to hold
    jobs: set[int] = dataclasses.field(default_factory=set)  # job ids of its leases
    answered: set[int] = dataclasses.field(default_factory=set)
    """Of ``jobs``, those whose result is being stored: the worker runs them no more (see ``room``)."""
    per_handler: Counter[str] = dataclasses.field(default_factory=Counter)
    last_seen: float = 0.0  # monotonic
    silent_after_seconds: float = math.inf  # connected: gone when it sends nothing for this long
    grace_until: float | None = None  # disconnected: its leases wait for it until then
    ewma_seconds: float | None = None  # job run time as the worker reports it
    done: int = 0  # results accepted since the counts were last flushed to the store
    failed: int = 0

    @property
    def worker_id(self) -> str:
        return self.info.worker_id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def labels(self) -> Mapping[str, str]:
        return self.info.labels

    @property
    def slots(self) -> int:
        return self.info.slots

    def room(self) -> int:
        """How many more leases it may hold: what it asked, capped by slots plus a prefetch bound.

        A lease whose result is being stored takes no room, up to as many as that bound again: the
        worker is done with it, and waiting for the commit (a group commit's fsync, longer under load)
        before it gets the next job would leave it idle with a full window of answered jobs. Their
        results wait in its memory until acknowledged, so they are bounded too."""
        window = min(self.capacity, self.slots + prefetch_bound(self.slots, self.ewma_seconds))
        return window - len(self.jobs) + min(len(self.answered), window)

    def room_for(self, queue: HandlerQueue, unknown: float = 0.0) -> int:
        """Of its :meth:`room`, how many more of ``queue``'s jobs: their own run time bounds their prefetch.
        A worker's run time is that of whatever it ran last; sized by short jobs of one handler, its window
        took 78-273 five-second jobs of another on 2 slots (stranded there for minutes, while a worker that
        joined later got none). None beyond its slots before one of them ran anywhere.

        ``unknown``: the priorities of the handlers wanting work whose run time is not known yet (no prefetch
        for them until one of their jobs ran; ``queue`` among them gets its slots either way). Their part of
        the window is kept for them: else the first handler whose run time was known took whole windows,
        6,000 jobs each for the first two of 100 handlers started together, which then sat out for seconds
        while the others caught up on their turns (``bench/scale.py handlers``: one share of 0.0 of an
        equal one over the window where all ran)."""
        window = self.slots + prefetch_bound(self.slots, queue.ewma_seconds)
        if unknown > 0:
            whole = min(self.capacity, self.slots + prefetch_bound(self.slots, self.ewma_seconds))
            priority = queue.settings.priority
            window = min(window, max(self.slots, math.ceil(whole * priority / (priority + unknown))))
        return window - self.per_handler[queue.handler_id] + min(len(self.answered), window)

    def free_slots(self) -> int:
        return self.slots - len(self.jobs) + len(self.answered)
