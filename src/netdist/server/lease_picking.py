"""``pick``, the lease table's transition that makes new leases: which worker gets which handler's
jobs, how many, and in what order. Pure, as the whole table (:mod:`netdist.server.leases`)."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from netdist.server import policy
from netdist.server.lease_book import LeaseBook
from netdist.server.lease_model import HandlerQueue, Lease, ReadyJob, WorkerState
from netdist.server.states import JobStatus

_AVAILABLE, _LEASED = JobStatus.AVAILABLE, JobStatus.LEASED  # for _lease, per job: see states.py
RUN_JOBS = 32
"""The jobs a handler gives in a row, once its turn came, within one pick (if it has them and its limits
allow): then the lowest pass value goes next, as after every job with 1. The shares over more than a
few turns are those of one job at a time, while a lease batch, the worker's result batch and the rows
its result write touches hold runs of one handler's jobs, not one job of each. With 100 handlers at once
(``bench/scale.py handlers``, three pairs in one sitting: bench/README.md), one job at a time cost the
result write 1.4-1.7x the CPU of runs of 32 (its rows scattered over the jobs table) and the pick 1.2-1.5x."""


class LeasePicker(LeaseBook):
    """The records are the :class:`LeaseBook`'s; :class:`~netdist.server.leases.LeaseTable` adds the
    other transitions."""

    def pick(self) -> list[Lease]:
        """Fill the connected workers' room with new leases; those marked ``sent`` go to their workers
        now (held lazily, or written), the others once stored.

        First the free slots, one per worker a round at a time, so that every idle
        worker gets a job before any gets a second; then prefetch. Handlers take
        turns by stride scheduling on their priority, in runs of RUN_JOBS jobs."""
        now_wall = self.clock.time()
        picked: list[Lease] = []
        serving = [q for q in self.handlers.values() if q.active and q.queued and not q.failing]
        self._join_turns(serving)
        if not serving:
            return picked
        workers = self.candidates(serving)
        hungry = [w for w in workers if min(w.room(), w.free_slots()) > 0]
        while hungry:
            served = []
            for state in hungry:
                got = self._pick_for(state, 1, now_wall, prefetch=False)
                picked += got
                if got and min(state.room(), state.free_slots()) > 0:
                    served.append(state)
            hungry = served
        unknown = sum(  # the handlers wanting work that may not prefetch yet: their part of each window waits
            q.settings.priority
            for q in self.handlers.values()
            if q.ewma_seconds is None and q.active and not q.failing and q.counts[JobStatus.AVAILABLE]
        )
        for state in workers:
            room = state.room()
            if room > 0:
                picked += self._pick_for(state, room, now_wall, prefetch=True, unknown=unknown)
        return picked

    def _join_turns(self, serving: list[HandlerQueue]) -> None:
        """A handler that had no job to give at the last pick (its first jobs not made yet, paused,
        failing, its queue run dry) starts at the lowest pass value of those that kept giving, if it
        is below it: no credit for the time it sat out. Without this, 100 handlers started 8 at a
        time: each started at the lowest pass value of the running ones, which were often others
        whose first jobs were still being made, and once its own jobs came it took every worker
        until it caught up (a share of 1.4 of an equal one over the window where all ran)."""
        kept = [q.pass_value for q in serving if q.handler_id in self._serving]
        if kept and len(kept) < len(serving):
            floor = min(kept)
            for queue in serving:
                if queue.handler_id not in self._serving and queue.pass_value < floor:
                    queue.pass_value = floor
        self._serving = {q.handler_id for q in serving}

    def _pick_for(
        self, state: WorkerState, room: int, now_wall: float, *, prefetch: bool, unknown: float = 0.0
    ) -> list[Lease]:
        """Up to ``room`` leases for one worker from the eligible handler of the lowest pass value (the
        first of them in the table's order on a tie), in runs (``RUN_JOBS``): a heap, as the pass value
        moves only for the handler that just gave a job."""
        eligible = [
            (q.pass_value, i, q)
            for i, q in enumerate(self.handlers.values())
            if self._may_serve(q, state, now_wall, prefetch=prefetch)
        ]
        heapq.heapify(eligible)
        picked: list[Lease] = []
        while len(picked) < room and eligible:
            _, order, queue = eligible[0]
            # The handler at the top gives RUN_JOBS jobs, and more until its pass value passes the next
            # in turn's (a child of the heap's root): the heap moves once per run of its jobs.
            runner_up = min(eligible[1:3], default=None)
            given = 0
            limits_move = not _steady(queue)
            mine = state.room_for(queue, unknown) if prefetch else room  # a free slot takes any handler's job
            pop = queue.pop if not queue.held else self._retries_first(queue, state)  # some of its jobs failed
            while True:
                if given >= mine:
                    heapq.heappop(eligible)
                    break
                job = pop()
                if job is None:
                    heapq.heappop(eligible)
                    break
                picked.append(self._lease(queue, state, job, now_wall))
                given += 1
                if not (self._may_serve(queue, state, now_wall, prefetch=prefetch) if limits_move else queue.queued):
                    heapq.heappop(eligible)
                    break
                if len(picked) >= room or (
                    given >= RUN_JOBS and runner_up is not None and (queue.pass_value, order) > runner_up[:2]
                ):
                    heapq.heapreplace(eligible, (queue.pass_value, order, queue))
                    break
        return picked

    def _retries_first(self, queue: HandlerQueue, state: WorkerState) -> Callable[[], ReadyJob | None]:
        """``queue.pop`` for ``state`` while some of its jobs are held after failing (``HandlerQueue.held``):
        the oldest of them this worker may take first, then the ready ones. It may take one that failed on
        it once the wait for others ran out (RETRY_ELSEWHERE_SECONDS), or when no other connected worker
        the handler may serve is there (one worker alone still retries)."""
        now = self.clock.monotonic()
        worker_id = state.worker_id
        others: dict[frozenset[str], bool] = {}
        exhausted = False  # nothing held is for this worker: nothing becomes so during this pick

        def pop() -> ReadyJob | None:
            nonlocal exhausted
            if not exhausted:
                job = self._take_held(queue, worker_id, now, others)
                if job is not None:
                    return job
                exhausted = True
            return queue.pop()

        return pop

    def _take_held(
        self, queue: HandlerQueue, worker_id: str, now: float, others: dict[frozenset[str], bool]
    ) -> ReadyJob | None:
        """The oldest held job ``worker_id`` may take, out of the queue; None if there is none. Each group
        of ``held`` (jobs that failed on the same workers) is in the order its jobs came, which is that of
        their waits' ends: its first job tells for the group."""
        best: tuple[float, frozenset[str], int, ReadyJob] | None = None
        for failed_on, group in list(queue.held.items()):
            while group:  # a job no longer queued (leased from elsewhere) is left behind here: drop it
                job_id, retry = next(iter(group.items()))
                if job_id in queue.queued:
                    break
                del group[job_id]
            if not group:
                del queue.held[failed_on]
                continue
            if worker_id in failed_on and retry.until > now:
                wait = others.get(failed_on)
                if wait is None:
                    wait = others[failed_on] = self.others_may_take(queue, failed_on)
                if wait:
                    continue
            if best is None or retry.until < best[0]:
                best = (retry.until, failed_on, job_id, retry.job)
        if best is None:
            return None
        _, failed_on, job_id, job = best
        group = queue.held[failed_on]
        del group[job_id]
        if not group:
            del queue.held[failed_on]
        queue.queued.discard(job_id)
        queue.failed_on[job_id] = failed_on  # a failure of this lease adds its worker (LeaseBook._hold)
        return job

    def _may_serve(self, queue: HandlerQueue, state: WorkerState, now_wall: float, *, prefetch: bool) -> bool:
        if not queue.active or queue.failing or not queue.queued:
            return False
        if queue.on_probation and (prefetch or state.free_slots() <= 0):
            return False
        if prefetch and queue.settings.max_parallel_jobs is not None:
            return False  # a prefetched job would hold one of the few parallel places while it waits
        if state.worker_id not in self.servable(queue):
            return False  # not by name, labels or platform (its dependencies not locked for it yet)
        return policy.may_serve(queue, state, now_wall, self.usage)

    def _lease(self, queue: HandlerQueue, state: WorkerState, job: ReadyJob, now_wall: float) -> Lease:
        """Runs for every job: the properties it needs read once."""
        now = self.clock.monotonic()
        handler_id, settings = queue.spec.handler_id, queue.spec.settings
        lazy = job.stored and self.lazy_leases  # held lazily: no write unless it lasts (server/leases.py)
        lease_no = job.lease_no + 1
        timeout = settings.job_timeout_seconds  # from the start once the worker reports it; from the lease until then
        lease = Lease(  # positional, in Lease's order: this runs for every job
            job.job_id,
            lease_no,
            handler_id,
            state.info.worker_id,
            job.attempts + 1,  # attempt
            job.input,
            now_wall,  # leased_at
            now,  # leased_mono
            lazy,  # stored
            not lazy,  # written
            job.stored,  # sent
            job.extra,
            now + timeout if timeout else None,  # deadline
        )
        if lazy:
            self.unwritten.append((job.job_id, lease_no))
        self.leases[job.job_id] = lease
        state.jobs.add(job.job_id)
        state.per_handler[handler_id] += 1
        counts = queue.counts
        counts[_AVAILABLE] -= 1
        counts[_LEASED] += 1
        queue.pass_value += 1.0 / settings.priority
        return lease


def _steady(queue: HandlerQueue) -> bool:
    """Whether what ``_may_serve`` says of ``queue`` stays true during a pick while it has jobs: none of
    the limits that a lease moves (parallel jobs, jobs per client, probation's free slots) applies. The
    others (active, failing, who may be served, the idle window at the pick's time, the day's budget)
    hold for the whole pick."""
    settings = queue.settings
    return settings.max_parallel_jobs is None and settings.max_jobs_per_client is None and not queue.on_probation
