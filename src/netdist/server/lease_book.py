"""The lease table's records and their bookkeeping: each running handler's queue and counts, each
worker, each lease out, and the indexes between them.

What is here changes records without deciding anything that the store or a
worker must hear of: queues filled from the store, counts moved, a worker's
capacity and last sign of life, a lease forgotten. The transitions that decide
(and return :class:`~netdist.server.lease_model.Effects`) are the
:class:`~netdist.server.leases.LeaseTable`'s, built on this class.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence

from netdist.server import policy
from netdist.server.clock import Clock
from netdist.server.lease_model import (
    RETRY_ELSEWHERE_SECONDS,
    HandlerQueue,
    HandlerSpec,
    Lease,
    ReadyJob,
    Ref,
    WorkerState,
)
from netdist.server.states import JobStatus

RESTART_GRACE_SECONDS = 10.0
"""Leases adopted after a restart wait at least this long for their workers to come back."""

EWMA_ALPHA = 0.2


class LeaseBook:
    """The records: ``handlers`` (queues), ``workers`` and ``leases`` (by job id)."""

    def __init__(
        self,
        *,
        clock: Clock,
        reconnect_grace_seconds: float,
        silent_after_seconds: float,
        usage: policy.DailyUsage | None = None,
        lazy_leases: bool = True,
    ) -> None:
        """``reconnect_grace_seconds``: how long the leases of a stream that ended without handing
        them back wait for their worker; ``silent_after_seconds``: a connected worker that sends
        nothing for this long is taken as gone. Leases adopted after a restart wait this long, and
        at least RESTART_GRACE_SECONDS, since workers reconnect with a backoff. ``lazy_leases``: a
        lease of a job the store holds as it is is held lazily (server/leases.py); False: every
        lease is written."""
        self.clock = clock
        self.reconnect_grace_seconds = reconnect_grace_seconds
        # Workers reconnect to a restarted server with a backoff of up to about 6 s.
        self.restart_grace_seconds = max(silent_after_seconds, RESTART_GRACE_SECONDS)
        self.silent_after_seconds = silent_after_seconds
        self.usage = usage if usage is not None else policy.DailyUsage(clock=clock)
        self.handlers: dict[str, HandlerQueue] = {}
        self.workers: dict[str, WorkerState] = {}
        self.leases: dict[int, Lease] = {}
        self.lazy_leases = lazy_leases
        self.unwritten: deque[tuple[int, int]] = deque()
        """The leases held lazily, oldest first (some since ended or written), as (job id, lease number):
        ``due_leases`` takes those that lasted long enough to be written. Numbers, not the leases, so that
        a lease is freed when it ends, not a second later: freeing 30,000 leases a second long out of the
        CPU's caches was 3.5% of the event loop's time."""
        self.counted: set[str] = set()
        """Workers whose ``done`` or ``failed`` grew since ``take_worker_counts``: a flush looks at these
        only (it runs at every disconnect, and 10,000 streams ending made it quadratic)."""
        self._servable: dict[str, set[str]] = {}
        """Per handler, the workers its settings allow by name, labels and platform (what does not
        change while both are here): filled when ``pick`` first needs it, kept as workers come and go,
        dropped when the handler's spec changes. With thousands of workers that a handler may not
        serve, ``pick`` looks at the others only."""
        self._joined: dict[str, int] = {}  # worker id -> the order it first connected in: pick's order
        self.workers_due = -math.inf
        """The monotonic time before which no worker can fall silent or run out of grace: ``tick`` looks at
        the workers only from then (it looked at 10,000 idle streams ten times a second: 2% of the server's
        CPU samples). A worker's deadline only moves later as it talks; where one may come sooner (a worker
        connects, disconnects or is adopted, its silence shrinks), this is reset to look at them all again."""
        self._serving: set[str] = set()
        """The handlers that had jobs to give at the last ``pick``: one that was not among them joins
        the turns without credit for the time it sat out (``LeasePicker._join_turns``)."""
        self._releases: list[float] = []
        """A heap of the times (monotonic) jobs held away from the workers they failed on may go to
        those too (``HandlerQueue.held``): ``tick`` asks for a pick then."""

    # -- reading -----------------------------------------------------------------------------------

    def counts(self, handler_id: str) -> Counter[str]:
        queue = self.handlers.get(handler_id)
        return queue.counts if queue is not None else Counter()

    def leases_of(self, *, handler_id: str | None = None, worker_id: str | None = None) -> list[Lease]:
        if worker_id is not None:
            state = self.workers.get(worker_id)
            found = [self.leases[j] for j in sorted(state.jobs) if j in self.leases] if state else []
            return [lease for lease in found if handler_id is None or lease.handler_id == handler_id]
        # One handler's first, then sorted: `handlers list` asks this for every handler.
        chosen = (x for x in self.leases.values() if handler_id is None or x.handler_id == handler_id)
        return sorted(chosen, key=lambda lease: lease.job_id)

    def leases_by_handler(self, limit: int) -> dict[str, list[Lease]]:
        """Every handler's leases, each handler's first ``limit`` by job id, in one pass over the table:
        ``handlers list`` asked :meth:`leases_of` once per handler, each a pass over every lease (5.2 ms
        of the event loop with 100 handlers and 4,000 leases; this takes 0.3 ms)."""
        grouped: dict[str, list[Lease]] = {}
        for lease in self.leases.values():
            grouped.setdefault(lease.handler_id, []).append(lease)
        return {h: heapq.nsmallest(limit, found, key=_job_id) for h, found in grouped.items()}

    def current(self, worker_id: str, ref: Ref) -> Lease | None:
        """The lease ``ref`` if it is current and held by ``worker_id``."""
        lease = self.leases.get(ref[0])
        if lease is None or lease.lease_no != ref[1] or lease.worker_id != worker_id:
            return None
        return lease

    # -- handler queues ----------------------------------------------------------------------------

    def add_handler(
        self,
        spec: HandlerSpec,
        *,
        counts: Mapping[str, int],
        streak: int,
        active: bool,
        pruned: tuple[int, int] = (0, 0),
    ) -> None:
        """A handler starts (or resumes after a restart) with its counts, retention's tallies and its
        streak as stored."""
        running = [q.pass_value for q in self.handlers.values() if q.active]
        queue = HandlerQueue(
            spec=spec, active=active, pass_value=min(running, default=0.0), streak=streak, pruned=pruned
        )
        queue.counts.update(counts)
        self.handlers[spec.handler_id] = queue
        self._servable.pop(spec.handler_id, None)

    def update_spec(self, spec: HandlerSpec) -> None:
        queue = self.handlers.get(spec.handler_id)
        if queue is not None:
            queue.spec = spec
        self._servable.pop(spec.handler_id, None)

    def remove_handler(self, handler_id: str) -> None:
        """Forget a handler's queue (after ``revoke_handler``, or once it finished)."""
        self.handlers.pop(handler_id, None)
        self._servable.pop(handler_id, None)

    def candidates(self, queues: Sequence[HandlerQueue]) -> list[WorkerState]:
        """The connected workers with capacity that some of ``queues`` may serve by name, labels and
        platform, in the order they first connected: what ``pick`` looks at."""
        ids = set().union(*(self.servable(q) for q in queues))
        found = [w for i in ids if (w := self.workers.get(i)) is not None and w.connected and w.capacity > 0]
        found.sort(key=lambda w: self._joined.get(w.worker_id, -1))
        return found

    def servable(self, queue: HandlerQueue) -> set[str]:
        """The workers ``queue``'s handler may serve by name, labels and platform (``_servable``)."""
        found = self._servable.get(queue.handler_id)
        if found is None:
            found = {w.worker_id for w in self.workers.values() if _may_ever_serve(queue, w)}
            self._servable[queue.handler_id] = found
        return found

    def _worker_joined(self, state: WorkerState) -> None:
        """A worker (re)connected, maybe with another name, labels or platform."""
        self._joined.setdefault(state.worker_id, len(self._joined))
        for handler_id, ids in self._servable.items():
            queue = self.handlers.get(handler_id)
            if queue is not None and _may_ever_serve(queue, state):
                ids.add(state.worker_id)
            else:
                ids.discard(state.worker_id)

    def _worker_left(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)
        self._joined.pop(worker_id, None)
        for ids in self._servable.values():
            ids.discard(worker_id)

    def set_active(self, handler_id: str, active: bool) -> None:
        queue = self.handlers.get(handler_id)
        if queue is None:
            return
        if active and not queue.active:  # no catching up for the time it was paused
            others = [q.pass_value for q in self.handlers.values() if q.active]
            queue.pass_value = max(queue.pass_value, min(others, default=0.0))
        queue.active = active

    def enqueued(self, handler_id: str, count: int) -> None:
        queue = self.handlers.get(handler_id)
        if queue is not None and count:
            queue.counts[JobStatus.AVAILABLE] += count
            queue.more_in_store = True

    def processed(self, handler_id: str, *, was: JobStatus, count: int, invalid: int = 0) -> None:
        """The handler processed results (SUCCEEDED -> PROCESSED) or failures (ERRORED -> FAILED);
        ``invalid`` results it could not read count as FAILED."""
        queue = self.handlers.get(handler_id)
        if queue is None or not count:
            return
        done = JobStatus.PROCESSED if was == JobStatus.SUCCEEDED else JobStatus.FAILED
        queue.counts[was] -= count
        queue.counts[done] += count - invalid
        queue.counts[JobStatus.FAILED] += invalid

    def reset_counts(self, handler_id: str, counts: Mapping[str, int], pruned: tuple[int, int]) -> None:
        queue = self.handlers.get(handler_id)
        if queue is not None:
            queue.counts.clear()
            queue.counts.update(counts)
            queue.pruned = pruned

    def rescan(self, handler_id: str) -> None:
        """Read the handler's available jobs from the store again from the start (after memory and
        store disagreed): jobs already queued or leased are skipped as they come."""
        queue = self.handlers.get(handler_id)
        if queue is not None:
            queue.cursor = 0
            queue.more_in_store = True

    def refills_wanted(self, low_water: int) -> list[tuple[str, int]]:
        """Handlers whose queue runs low while the store has more: (handler id, cursor); marked refilling."""
        wanted = []
        for queue in self.handlers.values():
            if queue.active and queue.more_in_store and not queue.refilling and len(queue.queued) < low_water:
                queue.refilling = True
                wanted.append((queue.handler_id, queue.cursor))
        return wanted

    def refill_with_enqueue(self, handler_id: str, low_water: int) -> int | None:
        """The cursor to read available jobs from in the transaction that adds new ones, when the
        handler's queue runs low and no refill is under way (then it is one: marked refilling)."""
        queue = self.handlers.get(handler_id)
        if queue is None or not queue.active or queue.refilling or len(queue.queued) >= low_water:
            return None
        queue.refilling = True
        return queue.cursor

    def refilled(self, handler_id: str, jobs: Sequence[ReadyJob], *, more: bool) -> int:
        """Jobs read from the store as available; those leased meanwhile are skipped. Returns how many queued."""
        queue = self.handlers.get(handler_id)
        if queue is None:
            return 0
        queue.refilling = False
        added = 0
        for job in jobs:
            if job.job_id not in self.leases and job.job_id not in queue.queued:
                queue.push_back(job)
                added += 1
        if jobs:
            queue.cursor = max(queue.cursor, jobs[-1].job_id)
        queue.more_in_store = more
        return added

    def refill_failed(self, handler_id: str) -> None:
        queue = self.handlers.get(handler_id)
        if queue is not None:
            queue.refilling = False

    def may_queue_unstored(
        self, handler_id: str, count: int, limit: int, *, nbytes: int = 0, max_bytes: int | None = None
    ) -> bool:
        """Whether ``count`` new jobs (``nbytes`` of inputs), their insert queued in the store's writer
        (ahead of any write about them), may join the handler's queue before that commit: when it holds
        every available job the store has, and stays within ``limit`` jobs and ``max_bytes`` of inputs.
        Else they wait in the store for a refill."""
        queue = self.handlers.get(handler_id)
        return (
            queue is not None
            and count > 0
            and queue.active
            and not queue.refilling
            and not queue.more_in_store
            and len(queue.queued) + count <= limit
            and (max_bytes is None or queue.ready_bytes + nbytes <= max_bytes)
        )

    def queue_unstored(self, handler_id: str, jobs: Sequence[ReadyJob]) -> None:
        """Queue new jobs :meth:`may_queue_unstored` allowed, in the order they were made."""
        queue = self.handlers[handler_id]
        for job in jobs:
            queue.push_back(job)
        queue.cursor = max(queue.cursor, jobs[-1].job_id)
        queue.counts[JobStatus.AVAILABLE] += len(jobs)

    def unqueue(self, handler_id: str, job_ids: Sequence[int]) -> None:
        """Jobs queued by :meth:`queue_unstored` whose insert failed: those not leased yet leave the
        queue (``LeaseTable.withdraw`` ends the leases made of the others)."""
        queue = self.handlers.get(handler_id)
        if queue is None:
            return
        gone = [job_id for job_id in job_ids if job_id in queue.queued]
        queue.queued.difference_update(gone)
        queue.counts[JobStatus.AVAILABLE] -= len(gone)

    # -- workers -----------------------------------------------------------------------------------

    def disconnect(self, worker_id: str) -> None:
        """Its stream ended: its leases wait for it to reconnect, within the grace."""
        state = self.workers.get(worker_id)
        if state is not None and state.connected:
            state.connected = False
            state.capacity = 0
            state.grace_until = self.clock.monotonic() + self.reconnect_grace_seconds
            self.workers_due = -math.inf

    def set_capacity(self, worker_id: str, jobs: int) -> None:
        state = self.workers.get(worker_id)
        if state is not None and state.connected:
            state.capacity = max(0, jobs)
            state.last_seen = self.clock.monotonic()

    def set_silent_after(self, worker_id: str, seconds: float) -> None:
        """The connected worker is gone when it sends nothing for ``seconds`` (its heartbeat interval
        changed)."""
        state = self.workers.get(worker_id)
        if state is not None and state.connected:
            state.silent_after_seconds = seconds
            self.workers_due = -math.inf

    def silent_after_below(self, seconds: float) -> list[str]:
        """The connected workers that are given less than ``seconds`` of silence."""
        return [w.worker_id for w in self.workers.values() if w.connected and w.silent_after_seconds < seconds]

    def seen(self, worker_id: str) -> None:
        state = self.workers.get(worker_id)
        if state is not None:
            state.last_seen = self.clock.monotonic()

    def take_worker_counts(self) -> dict[str, tuple[int, int]]:
        """(done, failed) results per worker since the last call, for the store; zeroed here."""
        counts = {}
        for worker_id in self.counted:
            state = self.workers.get(worker_id)
            if state is not None and (state.done or state.failed):
                counts[worker_id] = (state.done, state.failed)
                state.done = state.failed = 0
        self.counted.clear()
        return counts

    def progress(self, worker_id: str, ref: Ref, percent: float, text: str) -> None:
        lease = self.current(worker_id, ref)
        if lease is not None:
            lease.progress_percent = max(0.0, min(100.0, percent)) if math.isfinite(percent) else 0.0
            lease.progress_text = text

    # -- jobs that failed on a worker ---------------------------------------------------------------

    def _hold(self, queue: HandlerQueue, job: ReadyJob, worker_id: str | None) -> None:
        """Queue a job again that failed on ``worker_id`` (None: its lease ended uncharged, say handed
        back, while it had failed before): other workers take it first (``HandlerQueue.held``). A job
        that never failed goes back to the front of the ready queue."""
        failed_on = queue.failed_on.pop(job.job_id, frozenset())
        if worker_id is not None:
            failed_on |= {worker_id}
        if not failed_on:
            queue.push_front(job)
            return
        until = self.clock.monotonic() + RETRY_ELSEWHERE_SECONDS
        queue.hold(job, failed_on, until)
        heapq.heappush(self._releases, until)

    def releases_due(self) -> bool:
        """Whether a held job's wait for other workers ended since the last call (``tick`` picks then)."""
        releases, now, due = self._releases, self.clock.monotonic(), False
        while releases and releases[0] <= now:
            heapq.heappop(releases)
            due = True
        return due

    def forget_failures(self) -> None:
        """Forget which workers a job failed on once it is not leased any more (it ended, or is held
        again with them): ``failed_on`` keeps them only while its lease runs."""
        leases = self.leases
        for queue in self.handlers.values():
            if queue.failed_on:
                for job_id in [j for j in queue.failed_on if j not in leases]:
                    del queue.failed_on[job_id]

    def others_may_take(self, queue: HandlerQueue, failed_on: frozenset[str]) -> bool:
        """Whether a connected worker with room to ask for jobs, that ``queue`` may serve by name,
        labels and platform, is not among ``failed_on``: a job that failed on those waits for it."""
        workers = self.workers
        return any(
            w not in failed_on and (state := workers.get(w)) is not None and state.connected and state.capacity > 0
            for w in self.servable(queue)
        )

    # -- internals ---------------------------------------------------------------------------------

    def _timeout(self, handler_id: str) -> float | None:
        queue = self.handlers.get(handler_id)
        return queue.settings.job_timeout_seconds if queue is not None else None

    def _max_attempts(self, handler_id: str) -> int:
        queue = self.handlers.get(handler_id)
        return queue.settings.max_attempts if queue is not None else 1

    def _note_duration(self, state: WorkerState, queue: HandlerQueue | None, seconds: float) -> None:
        """A job's run time as its worker reported it, into the worker's average and its handler's."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        prev = state.ewma_seconds
        state.ewma_seconds = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)
        if queue is not None:
            prev = queue.ewma_seconds
            if prev is None:
                self._join_prefetch(queue)
            queue.ewma_seconds = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)

    def _join_prefetch(self, queue: HandlerQueue) -> None:
        """A handler's first run time is known: from now on it may prefetch. Until then it had its workers'
        slots only (``WorkerState.room_for``), so the others' pass values ran ahead of its own; it starts at
        the lowest of theirs (those that prefetch and have jobs to give), as one that sat out does
        (``LeasePicker._join_turns``). Without this, 100 handlers started together: the last whose first
        job ran then took the workers until it caught up, and the first ones sat out (``bench/scale.py
        handlers``: shares 0.84-1.08 of an equal one over the window where all ran)."""
        others = [
            q.pass_value
            for q in self.handlers.values()
            if q is not queue and q.ewma_seconds is not None and q.active and q.queued
        ]
        if others:
            queue.pass_value = max(queue.pass_value, min(others))

    def _drop(self, lease: Lease, *, ran_seconds: float | None = None) -> None:
        """Forget a lease; charge its worker's daily budget with the run time (reported, or since the start)."""
        if self.leases.get(lease.job_id) is lease:
            del self.leases[lease.job_id]
        state = self.workers.get(lease.worker_id)
        if state is not None and lease.job_id in state.jobs:
            state.jobs.discard(lease.job_id)
            state.answered.discard(lease.job_id)
            state.per_handler[lease.handler_id] -= 1
        if ran_seconds is None and lease.started_mono is not None:
            ran_seconds = self.clock.monotonic() - lease.started_mono
        if ran_seconds:
            self.usage.charge(lease.worker_id, lease.handler_id, ran_seconds)


def _job_id(lease: Lease) -> int:
    return lease.job_id


def _may_ever_serve(queue: HandlerQueue, state: WorkerState) -> bool:
    """The rules of serving that depend on the handler's settings and the worker's identity only
    (``policy.client_allowed``), and its platform: while neither changes, neither does the answer."""
    return queue.spec.serves(state.info.platform) and policy.client_allowed(queue.settings, state)
