"""The lease table: the one owner of lease state. Pure: no I/O, no protobuf, time from a Clock.

It holds each running handler's queue of ready jobs and its job counts, every
lease out (which worker holds which job, at which lease number, started or
not), each worker's capacity, and the failed-results streak of each handler
(those records and their bookkeeping are :mod:`netdist.server.lease_book`'s).
It changes only through the named transitions below; each returns what the
caller must write to the store and tell whom (:class:`Effects`). The store is
the durable copy, fenced by lease number: every write the table asks for is a
compare-and-set on (status, lease_no), so a second server on the same store
could never make two leases of one job both count.

Transitions:

- ``pick``: fill every connected worker's room with leases (fair share
  between handlers, within their settings). A lease of a job the store
  holds as it is (``ReadyJob.stored``) goes to its worker as soon as it is
  made and is held lazily: nothing is written for it (``Lease.written``
  False). The job's row, still available one number below the lease, is
  enough to fence it: the write that ends the lease (its result, a
  requeue) is a compare-and-set on "leased at this number" or "available
  below it", and sets the lease's number, worker and time itself. A lease
  that lasts --lease-write-delay (``due_leases``), and every one held when
  the server stops, is written then, so that a restarted server adopts it.
  A new job whose insert is queued counts as held (``queue_unstored``):
  every write about its lease queues behind that insert, and if the
  insert fails the lease ends (``withdraw``). Other leases (their job's
  requeue is still on the way) are written first and go once stored
  (``leases_stored`` / ``leases_failed``), so at most one lease of a job is
  ever out beyond what the store holds, one number above it. A sent lease
  the store refuses, or whose write fails, is revoked at its worker.
- ``started``: the worker began to run these; only from now on does losing
  the lease charge the job an attempt.
- ``settle`` / ``settled``: a result counts only for the job's current lease
  and only from the worker that holds it (fencing); everything else is for
  the store to classify (duplicate, stale, unknown) and changes nothing.
- ``hand_back``: the worker gives back leases it did not start: uncharged.
- ``tick``: job timeouts (charged, revoked), reconnect graces that ran out
  (started leases charged, others not), silent workers, and the end of a failed
  job's wait for another worker (below).
- ``revoke_handler`` / ``remove_worker``: the operator takes leases back, uncharged.

Lease numbers grow with every lease and every requeue of a job, so a lease
still on its way can never take a job that came back. A lease sent and never
stored (held lazily, its write failed, or the server died first) is not in the store, so
its number would come round again: a failed write puts its jobs back at the
number it sent, and a server starting raises the lease number of every
available job by one before it leases anything (``jobs.skip_unstored_leases``).
A job leased before its own insert committed and lost with the server never
existed: its id is never given to another job (server/job_ids.py), so its
lease is unknown to every later server.

A job whose lease failed on a worker (an error result it is retried after, or a
charged requeue: a job timeout, a lost worker) is held aside
(``HandlerQueue.held``) with the workers it failed on: ``pick`` gives it first to
any other eligible worker, and to one of those only once no other connected
worker may serve its handler, or after RETRY_ELSEWHERE_SECONDS (``tick`` picks
again then). A lease of it that ends uncharged puts it back as held as before.
This lives in memory only: after a restart, such a job may go once more to a
worker it failed on (the store's attempt history says where, but reading it with
each refill would cost every job).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from netdist.server.lease_book import EWMA_ALPHA
from netdist.server.lease_model import (
    Effects,
    HandlerQueue,
    Lease,
    ReadyJob,
    Ref,
    Requeue,
    ResultIn,
    Revocation,
    Settlement,
    Verdict,
    WorkerInfo,
    WorkerState,
)
from netdist.server.lease_picking import LeasePicker
from netdist.server.states import JobStatus


class LeaseTable(LeasePicker):
    """The transitions; the records and their bookkeeping are the :class:`LeaseBook`'s."""

    # -- handlers ----------------------------------------------------------------------------------

    def revoke_handler(self, handler_id: str, reason: str) -> Effects:
        """The handler stopped, failed or is removed: every lease of it comes back, uncharged."""
        effects = Effects()
        leases = self.leases_of(handler_id=handler_id)
        effects.revoke(leases, reason)
        self._requeue(leases, effects, charge=False, reason={"type": "Revoked", "message": reason})
        return effects

    def withdraw(self, handler_id: str, job_ids: Sequence[int]) -> Effects:
        """Jobs queued by ``queue_unstored`` whose insert failed: those not leased yet leave the
        queue; the leases made of them end, revoked at their workers (nothing to write: the jobs
        never existed; a lease whose write was queued is refused by the store and dropped then)."""
        self.unqueue(handler_id, job_ids)
        gone = [
            lease
            for job_id in job_ids
            if (lease := self.leases.get(job_id)) is not None and lease.handler_id == handler_id
        ]
        effects = Effects()
        effects.revoke(gone, "the server could not store this job")
        queue = self.handlers.get(handler_id)
        for lease in gone:
            self._drop(lease)
            if queue is not None:
                queue.counts[JobStatus.LEASED] -= 1
        return effects

    # -- workers -----------------------------------------------------------------------------------

    def adopt(self, lease: Lease) -> None:
        """A lease the store holds from before a restart: its worker gets the grace to come back."""
        lease.stored = lease.sent = True
        self.leases[lease.job_id] = lease
        state = self.workers.get(lease.worker_id)
        if state is None:
            state = self.workers[lease.worker_id] = WorkerState(
                WorkerInfo(worker_id=lease.worker_id, name=lease.worker_id[:8], labels={}, slots=1),
                connected=False,
                grace_until=self.clock.monotonic() + self.restart_grace_seconds,
            )
            self.workers_due = -math.inf
        state.jobs.add(lease.job_id)
        state.per_handler[lease.handler_id] += 1

    def connect(self, info: WorkerInfo, held: Iterable[Ref]) -> Effects:
        """A worker's stream said Hello. Leases it still holds continue; leases it does not
        name were lost on the way or with its process: they come back (charged only if started).
        What it names that is not its lease (it ended while the worker was away, or went out before
        its commit and was lost with a server) is revoked: the worker stops that job, whose result
        would only be refused."""
        now = self.clock.monotonic()
        old = self.workers.get(info.worker_id)
        state = WorkerState(info, last_seen=now, silent_after_seconds=self.silent_after_seconds)
        if old is not None:
            state.jobs, state.answered, state.per_handler = old.jobs, old.answered, old.per_handler
            state.ewma_seconds, state.done, state.failed = old.ewma_seconds, old.done, old.failed
        self.workers[info.worker_id] = state
        self.workers_due = -math.inf
        self._worker_joined(state)
        holding = set(held)
        lost = [
            lease
            for lease in self.leases_of(worker_id=info.worker_id)
            if lease.sent and not lease.settling and lease.ref not in holding
        ]
        effects = Effects()
        self._requeue(lost, effects, reason={"type": "WorkerLost", "message": "the worker reconnected without it"})
        known = {lease.ref for lease in self.leases_of(worker_id=info.worker_id) if lease.cancelled is None}
        stale = tuple(sorted(holding - known))
        if stale:
            effects.revocations.append(
                Revocation(worker_id=info.worker_id, refs=stale, reason="this lease is no longer this worker's")
            )
        return effects

    def remove_worker(self, worker_id: str, reason: str) -> tuple[Effects, int]:
        """The operator let the worker go: its leases are revoked and come back, uncharged."""
        effects = Effects()
        leases = self.leases_of(worker_id=worker_id)
        effects.revoke(leases, reason)
        self._requeue(
            leases, effects, charge=False, reason={"type": "WorkerRemoved", "message": f"{reason} by the operator"}
        )
        self._worker_left(worker_id)
        return effects, len(leases)

    def started(self, worker_id: str, refs: Iterable[Ref]) -> list[float]:
        """The worker began to run these leases; their job timeout counts from now.
        Returns how long each waited from its lease to its start, in seconds (for the metrics)."""
        now = self.clock.monotonic()
        waited = []
        for ref in refs:
            lease = self.current(worker_id, ref)
            if lease is not None and lease.sent and lease.started_mono is None:
                lease.started_mono = now
                waited.append(now - lease.leased_mono)
                timeout = self._timeout(lease.handler_id)
                if timeout:
                    lease.deadline = now + timeout
        self.seen(worker_id)
        return waited

    def hand_back(self, worker_id: str, refs: Iterable[Ref], reason: str) -> Effects:
        """The worker will not run these: they come back at once, uncharged (never a started one)."""
        leases = []
        for ref in refs:
            lease = self.current(worker_id, ref)
            if lease is not None and lease.sent and not lease.settling:
                leases.append(lease)
        effects = Effects()
        self._requeue(
            leases,
            effects,
            charge=False,
            reason={"type": "HandedBack", "message": reason or "the worker handed it back"},
        )
        return effects

    # -- leasing -----------------------------------------------------------------------------------

    def leases_stored(self, leases: Sequence[Lease], stored: set[int]) -> tuple[list[Lease], list[Lease], Effects]:
        """The lease write committed; ``stored`` holds the job ids the store took.

        Returns (to send, refused, effects): the leases not sent yet and still current
        go to their workers now; a lease cancelled while its write was on the way is
        requeued now (uncharged), unless a result for it is being stored (the result
        settles it); those the store refused (it did not have the job available below
        that lease number: memory and store disagree) are dropped and revoked at their
        workers, and the caller recounts their handlers from the store."""
        send, refused = [], []
        effects = Effects()
        for lease in leases:
            if self.leases.get(lease.job_id) is not lease:
                continue
            if lease.job_id not in stored:
                self._drop(lease)
                queue = self.handlers.get(lease.handler_id)
                if queue is not None:
                    queue.counts[JobStatus.LEASED] -= 1
                refused.append(lease)
                continue
            lease.stored = True
            if lease.cancelled is not None:
                if not lease.settling:
                    self._requeue([lease], effects, charge=False, reason=lease.cancelled)
            elif not lease.sent:
                lease.sent = True
                send.append(lease)
        effects.revoke(refused, "the store did not take this lease")
        return send, refused, effects

    def due_leases(self, leased_before: float) -> list[Lease]:
        """The leases held lazily since before ``leased_before`` (monotonic; all of them: ``math.inf``)
        that are still out and not being settled: the caller writes them now (``written`` is set here,
        so each is taken once) and hands the write's outcome to ``leases_stored``."""
        due: list[Lease] = []
        settling: list[tuple[int, int]] = []  # their result is on its way to the store; looked at again later
        waiting, leases = self.unwritten, self.leases
        while waiting:
            job_id, lease_no = waiting[0]
            lease = leases.get(job_id)
            if lease is None or lease.lease_no != lease_no or lease.written:
                waiting.popleft()  # ended, or written meanwhile
                continue
            if lease.leased_mono >= leased_before:
                break
            waiting.popleft()
            if lease.settling:
                settling.append((job_id, lease_no))
            else:
                lease.written = True
                due.append(lease)
        waiting.extend(settling)
        return due

    def write_later(self, leases: Sequence[Lease]) -> None:
        """The write of leases from ``due_leases`` failed: they stay held lazily, to be written later."""
        for lease in leases:
            lease.written = False
        self.unwritten.extend((lease.job_id, lease.lease_no) for lease in leases)

    def leases_failed(self, leases: Sequence[Lease]) -> Effects:
        """The lease write failed: the leases are revoked at their workers and the jobs go back to
        the front of their queues, uncharged, at the lease number that was sent (never sent again)."""
        effects = Effects()
        gone = [lease for lease in leases if self.leases.get(lease.job_id) is lease]
        effects.revoke(gone, "the server could not store this lease")
        for lease in gone:
            self._drop(lease)
            queue = self.handlers.get(lease.handler_id)
            if queue is not None:
                queue.counts[JobStatus.LEASED] -= 1
                queue.counts[JobStatus.AVAILABLE] += 1
                self._hold(  # back to the front, or held as before if it had failed
                    queue,
                    ReadyJob(lease.job_id, lease.lease_no, lease.attempt - 1, lease.input, False, lease.extra),
                    None,
                )
        return effects

    # -- results -----------------------------------------------------------------------------------

    def settle(self, worker_id: str, results: Sequence[ResultIn]) -> tuple[list[Verdict], list[Settlement], Effects]:
        """Decide each result: accepted only for the job's current lease held by ``worker_id`` (sent, not cancelled).

        Accepted leases are marked settling until ``settled``; the streak of failed
        results in a row moves now, in the order results arrive. A lease whose start
        the worker never reported (it reports a start with the result when the job ends
        within one of its sends) started, as far as ``Effects.waited`` tells, at the
        result's arrival less the run time the worker reported."""
        verdicts: list[Verdict] = []
        accepted: list[Settlement] = []
        effects = Effects()
        self.seen(worker_id)
        now = self.clock.monotonic()
        leases = self.leases
        state = self.workers.get(worker_id)
        answered = state.answered if state is not None else set()
        not_current, in_flight, accepted_, succeeded = (  # read once: see states.py on JobStatus.X
            Verdict.NOT_CURRENT,
            Verdict.IN_FLIGHT,
            Verdict.ACCEPTED,
            JobStatus.SUCCEEDED,
        )
        for result in results:  # runs for every job: ``current`` inlined, the tuples it takes not made
            lease = leases.get(result.job_id)
            if (
                lease is None
                or lease.lease_no != result.lease_no
                or lease.worker_id != worker_id
                or not lease.sent
                or lease.cancelled is not None
            ):
                verdicts.append(not_current)
                continue
            if lease.settling:
                verdicts.append(in_flight)
                continue
            lease.settling = True
            answered.add(lease.job_id)
            if lease.started_mono is None:  # a job that ended before its worker reported the start
                effects.waited.append(max(0.0, now - result.duration_seconds - lease.leased_mono))
            verdicts.append(accepted_)
            status = succeeded
            if result.error is not None:
                status = (
                    JobStatus.ERRORED if lease.attempt >= self._max_attempts(lease.handler_id) else JobStatus.AVAILABLE
                )
            accepted.append(
                Settlement(result, lease.handler_id, worker_id, status, lease.input, lease.extra, lease.leased_at)
            )
            queue = self.handlers.get(lease.handler_id)
            if queue is not None and (queue.streak or result.error is not None):  # else nothing changes
                self._count_streak(queue, failed=result.error, effects=effects)
        return verdicts, accepted, effects

    def settled(self, settlements: Sequence[Settlement], stored: set[int]) -> Effects:
        """The results in ``stored`` (job ids) are committed: the leases end and the counts move.
        The others (the write failed) are open again: the worker re-sends them after a reconnect."""
        effects = Effects()
        leases, workers, handlers = self.leases, self.workers, self.handlers
        ran: dict[tuple[str, str], float] = {}  # run time per (worker, handler), charged once per batch
        state: WorkerState | None = None
        leased, available = JobStatus.LEASED, JobStatus.AVAILABLE  # read once: see states.py
        for s in settlements:  # runs for every job: what _drop does, inlined, the lookups shared
            result = s.result
            job_id = result.job_id
            lease = leases.get(job_id)
            if lease is None or lease.lease_no != result.lease_no:
                continue
            if job_id not in stored:
                lease.settling = False
                holder = workers.get(lease.worker_id)
                if holder is not None:
                    holder.answered.discard(job_id)
                continue
            del leases[job_id]
            if state is None or state.worker_id != lease.worker_id:
                state = workers.get(lease.worker_id)
                if state is not None:
                    self.counted.add(state.worker_id)  # its done or failed moves (_worker_settled)
            seconds = result.duration_seconds
            queue = handlers.get(s.handler_id)
            if state is not None:
                self._worker_settled(state, queue, lease, result)
            if seconds > 0:  # what DailyUsage.charge would take of it (not negative, not NaN)
                key = (lease.worker_id, lease.handler_id)
                ran[key] = ran.get(key, 0.0) + seconds
            if queue is None:
                continue
            counts = queue.counts
            counts[leased] -= 1
            counts[s.status] += 1
            if s.status == available:  # it failed and is retried: on another worker if one takes it
                self._hold(
                    queue,
                    ReadyJob(lease.job_id, lease.lease_no + 1, lease.attempt, lease.input, True, lease.extra),
                    lease.worker_id,
                )
            else:
                effects.wake.add(s.handler_id)
        for (worker_id, handler_id), seconds in ran.items():
            self.usage.charge(worker_id, handler_id, seconds)
        return effects

    def _worker_settled(self, state: WorkerState, queue: HandlerQueue | None, lease: Lease, result: ResultIn) -> None:
        """The holder's side of a settled lease: it holds the job no more, and its figures move (the
        caller counts it in ``counted``)."""
        if lease.job_id in state.jobs:
            state.jobs.discard(lease.job_id)
            state.answered.discard(lease.job_id)
            state.per_handler[lease.handler_id] -= 1
        seconds = result.duration_seconds
        if (  # _note_duration's usual case, inlined: this runs for every job
            0.0 <= seconds < math.inf
            and state.ewma_seconds is not None
            and queue is not None
            and queue.ewma_seconds is not None
        ):
            state.ewma_seconds += EWMA_ALPHA * (seconds - state.ewma_seconds)
            queue.ewma_seconds += EWMA_ALPHA * (seconds - queue.ewma_seconds)
        else:
            self._note_duration(state, queue, seconds)
        if result.error is None:
            state.done += 1
        else:
            state.failed += 1

    # -- time --------------------------------------------------------------------------------------

    def tick(self) -> Effects:
        """Job timeouts, reconnect graces that ran out, workers that fell silent."""
        now = self.clock.monotonic()
        effects = Effects()
        expired = [
            lease
            for lease in self.leases.values()
            if lease.deadline is not None and lease.deadline <= now and lease.stored and not lease.settling
        ]
        if expired:
            effects.revoke(expired, "job timeout")
            # Charged only if it started: a lease that timed out before its start (say, its worker
            # was still fetching a large environment) never ran.
            self._requeue(
                expired, effects, reason={"type": "JobTimeout", "message": "the job ran past its job-timeout"}
            )
        if now >= self.workers_due:
            self._check_workers(now, effects)
        if self._releases and self.releases_due():
            effects.pick = True
        self.forget_failures()
        return effects

    def _check_workers(self, now: float, effects: Effects) -> None:
        """Workers that fell silent, and those whose grace ran out; ``workers_due`` from what is left."""
        due = math.inf
        for state in list(self.workers.values()):
            if state.connected and now - state.last_seen > state.silent_after_seconds:
                effects.silent.append(state.worker_id)
                self.disconnect(state.worker_id)
            elif not state.connected and state.grace_until is not None and state.grace_until <= now:
                lost = [lease for lease in self.leases_of(worker_id=state.worker_id) if not lease.settling]
                self._requeue(lost, effects, reason={"type": "WorkerLost", "message": "the worker disappeared"})
                if not state.jobs:
                    self._worker_left(state.worker_id)
                    continue
            if state.connected:
                due = min(due, state.last_seen + state.silent_after_seconds)
            elif state.grace_until is not None:  # past it with jobs settling: looked at again next tick
                due = min(due, max(state.grace_until, now))
        self.workers_due = due

    # -- internals ---------------------------------------------------------------------------------

    def _count_streak(self, queue: HandlerQueue, *, failed: Mapping[str, str] | None, effects: Effects) -> None:
        """``failed``: the result's error (None: it succeeded)."""
        handler_id = queue.handler_id
        before = queue.streak
        queue.streak = before + 1 if failed is not None else 0
        if queue.streak != before:
            effects.streaks[handler_id] = queue.streak
        if failed is not None and before == 0:
            # Probation: the jobs of this handler queued on workers and not started come back,
            # so a failing handler burns at most one attempt per free slot until a success.
            waiting = [
                lease
                for lease in self.leases_of(handler_id=handler_id)
                if lease.started_mono is None and not lease.settling
            ]
            effects.revoke(waiting, "the handler's jobs are failing: jobs go out one per free slot")
            self._requeue(
                waiting, effects, charge=False, reason={"type": "Revoked", "message": "probation after a failed result"}
            )
        limit = queue.settings.max_sequenced_errors
        if limit is not None and queue.streak >= limit and not queue.failing:
            queue.failing = True
            error = dict(failed or {})
            effects.failing[handler_id] = (queue.streak, f"{error.get('type', '')}: {error.get('message', '')}")

    def _requeue(
        self, leases: Iterable[Lease], effects: Effects, *, reason: Mapping[str, str], charge: bool | None = None
    ) -> None:
        """End leases without a result. ``charge`` None: charged when the lease had started.

        Each job goes back to the front of its queue; newest first, so that they go out
        again oldest first, in the order they were enqueued."""
        for lease in sorted(leases, key=lambda x: x.job_id, reverse=True):
            if self.leases.get(lease.job_id) is not lease:
                continue
            if not lease.stored:
                # Its write is on the way: it ends when leases_stored (or leases_failed) answers.
                lease.cancelled = lease.cancelled or reason
                continue
            charged = lease.started_mono is not None if charge is None else charge
            final = charged and lease.attempt >= self._max_attempts(lease.handler_id)
            self._drop(lease)
            queue = self.handlers.get(lease.handler_id)
            effects.requeues.append(
                Requeue(
                    job_id=lease.job_id,
                    lease_no=lease.lease_no,
                    handler_id=lease.handler_id,
                    worker_id=lease.worker_id,
                    charged=charged,
                    final=final,
                    error=reason,
                    started=lease.started_mono is not None,
                    leased_at=lease.leased_at,
                )
            )
            if queue is None:
                continue
            queue.counts[JobStatus.LEASED] -= 1
            if final:
                queue.counts[JobStatus.ERRORED] += 1
                effects.wake.add(lease.handler_id)
            else:
                queue.counts[JobStatus.AVAILABLE] += 1
                attempts = lease.attempt if charged else lease.attempt - 1
                job = ReadyJob(lease.job_id, lease.lease_no + 1, attempts, lease.input, False, lease.extra)
                # A charged lease failed on its worker (timed out, lost with it): others take the job first.
                self._hold(queue, job, lease.worker_id if charged else None)
