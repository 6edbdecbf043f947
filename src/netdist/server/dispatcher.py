"""The dispatcher: hands jobs to workers by credit, takes results back.

Leases and results are written in group commits; a lease reaches its worker
only after it is committed, and a result is acknowledged only after it is
committed. Handlers compete for each worker's credit by fair share (stride
scheduling on ``priority``), within the limits of their settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from netdist.api.v1 import jobs_pb2
from netdist.errors import PermissionDeniedError
from netdist.server import policy
from netdist.server.lease import HandlerSlot, LeaseRecord, Session
from netdist.server.states import JobStatus
from netdist.server.store import catalog
from netdist.server.store import jobs as job_store
from netdist.server.store.writer import GroupCommitWriter

log = logging.getLogger("netdist.server.dispatcher")
REFILL_BATCH = 2000
REFILL_BELOW = 500
_ACK = {
    True: jobs_pb2.ACK_OUTCOME_ACCEPTED,
    False: jobs_pb2.ACK_OUTCOME_DUPLICATE,
}


class Dispatcher:
    def __init__(
        self,
        writer: GroupCommitWriter,
        *,
        heartbeat_interval_seconds: float,
        on_streak: Callable[[str, int], None],
    ) -> None:
        self.writer = writer
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.heartbeat_timeout_seconds = heartbeat_interval_seconds * 3
        self._on_streak = on_streak
        self.slots: dict[str, HandlerSlot] = {}
        self.sessions: dict[str, Session] = {}
        self.leases: dict[int, LeaseRecord] = {}
        self.usage = policy.DailyUsage()
        self._maybe_failing: set[str] = set()  # handlers whose error streak may be > 0; the writer thread's
        self._last_flush = time.monotonic()
        self._orphaned: dict[str, float] = {}  # worker id -> when its leases go back
        self._timeouts: list[tuple[float, int, int]] = []  # (deadline, job id, lease no)
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Adopt the leases the store holds from before a restart, and today's run time per worker."""
        self.usage.seed(await self.writer.run(job_store.run_time_since, self.usage.day_start()))
        deadline = time.monotonic() + self.heartbeat_timeout_seconds
        for job_id, lease_no, handler_id, worker_id in await self.writer.run(job_store.leased):
            self.leases[job_id] = LeaseRecord(
                job_id=job_id, lease_no=lease_no, handler_id=handler_id, worker_id=worker_id,
                input=b"", leased_at=time.time(), deadline=None, attempt=0,
            )
            self._orphaned[worker_id] = deadline
        self._loops = [asyncio.create_task(self._dispatch_loop()), asyncio.create_task(self._timer_loop())]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush_worker_counts(list(self.sessions.values()))
        for session in list(self.sessions.values()):
            session.send(jobs_pb2.ServerMessage(drain=jobs_pb2.Drain(reason="server shutting down")))
            session.close()
        for task in self._loops:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def kick(self) -> None:
        self._kick.set()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatcher task failed", exc_info=task.exception())

    # -- handlers ---------------------------------------------------------------

    def register(self, slot: HandlerSlot) -> None:
        running = [s.pass_value for s in self.slots.values() if s.active]
        slot.pass_value = min(running, default=0.0)
        self.slots[slot.handler_id] = slot
        self._maybe_failing.add(slot.handler_id)  # read once from the store by the first batch
        self.kick()  # jobs already in the store (a restart, a start after stop) wait for a refill pass

    def unregister(self, handler_id: str) -> None:
        self.slots.pop(handler_id, None)

    def set_active(self, handler_id: str, active: bool) -> None:
        slot = self.slots.get(handler_id)
        if slot is not None:
            if active and not slot.active:
                slot.pass_value = max(slot.pass_value, min(
                    (s.pass_value for s in self.slots.values() if s.active), default=0.0))
            slot.active = active
            self.kick()

    def jobs_added(self, handler_id: str, count: int) -> None:
        slot = self.slots.get(handler_id)
        if slot is not None and count:
            slot.counts[JobStatus.AVAILABLE] += count
            slot.more_in_store = True
            self.kick()

    def leases_of(self, handler_id: str) -> list[LeaseRecord]:
        return [lease for lease in self.leases.values() if lease.handler_id == handler_id]

    async def revoke_handler(self, handler_id: str, reason: str) -> None:
        """Take back every lease of a handler (stopped or removed); the jobs stay available."""
        leases = self.leases_of(handler_id)
        self._send_revokes(leases, reason)
        await self._requeue(leases, {"type": "Revoked", "message": reason}, count_attempt=False)

    # -- workers ------------------------------------------------------------------

    async def connect(self, session: Session, held: Iterable[tuple[int, int]], hello: jobs_pb2.Hello) -> None:
        if await self.writer.run(catalog.worker_disabled, session.worker_id):
            raise PermissionDeniedError(
                f"worker {session.name} ({session.worker_id}) is disabled: netdist-admin workers enable {session.worker_id}")
        old = self.sessions.get(session.worker_id)
        if old is not None:
            old.close()
        self.sessions[session.worker_id] = session
        self._orphaned.pop(session.worker_id, None)
        held_set = set(held)
        lost = []
        for lease in self.leases.values():
            if lease.worker_id != session.worker_id:
                continue
            if lease.ref in held_set:
                session.leases.add(lease.job_id)
                session.per_handler[lease.handler_id] += 1
            else:
                lost.append(lease)
        await self.writer.run(
            catalog.worker_connected, worker_id=session.worker_id, name=session.name, labels=session.labels,
            slots=session.slots, hostname=hello.hostname, version=hello.version,
        )
        if lost:
            await self._requeue(lost, {"type": "WorkerLost", "message": "the worker reconnected without it"})

    async def disconnect(self, session: Session) -> None:
        session.close()
        if self.sessions.get(session.worker_id) is not session:
            return
        del self.sessions[session.worker_id]
        if session.leases:
            self._orphaned[session.worker_id] = time.monotonic() + self.heartbeat_timeout_seconds
        with contextlib.suppress(Exception):
            await self._flush_worker_counts([session])
            await self.writer.run(catalog.worker_disconnected, session.worker_id)

    async def remove_worker(self, worker_id: str) -> int:
        leases = [lease for lease in self.leases.values() if lease.worker_id == worker_id]
        # Revoke while the stream is still open (the outbox is written in order,
        # then closed), so that the worker kills those jobs instead of finishing them.
        self._send_revokes(leases, "worker removed")
        session = self.sessions.get(worker_id)
        if session is not None:
            await self.disconnect(session)
        self._orphaned.pop(worker_id, None)
        await self._requeue(leases, {"type": "WorkerRemoved", "message": "the worker was removed"},
                            count_attempt=False)
        return len(leases)

    def add_credit(self, session: Session, count: int) -> None:
        session.credit = max(0, min(session.credit + count, 100_000))
        session.last_seen = time.monotonic()
        self.kick()

    def on_progress(self, session: Session, items: Sequence[jobs_pb2.Progress]) -> None:
        session.last_seen = time.monotonic()
        for item in items:
            lease = self.leases.get(item.ref.job_id)
            if lease is not None and lease.lease_no == item.ref.lease_no:
                lease.progress_percent = max(0.0, min(100.0, item.percent))
                lease.progress_text = item.text[:500]

    # -- dispatch -----------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                self._dispatch_once()
            except Exception:
                log.exception("dispatch pass failed")

    def _dispatch_once(self) -> None:
        now = time.time()
        for slot in self.slots.values():
            if slot.active and len(slot.queued) < REFILL_BELOW and slot.more_in_store and not slot.refilling:
                slot.refilling = True
                self._spawn(self._refill(slot))
        for session in list(self.sessions.values()):
            if session.credit <= 0 or session.closed:
                continue
            picks = self._pick(session, session.credit, now)
            if not picks:
                continue
            session.credit -= len(picks)
            records = []
            for slot, job in picks:
                lease = LeaseRecord(
                    job_id=job.job_id, lease_no=job.lease_no + 1, handler_id=slot.handler_id,
                    worker_id=session.worker_id, input=job.input, leased_at=now, attempt=job.attempts + 1,
                    deadline=now + slot.settings.job_timeout_seconds if slot.settings.job_timeout_seconds else None,
                )
                self.leases[job.job_id] = lease
                session.leases.add(job.job_id)
                session.per_handler[slot.handler_id] += 1
                slot.counts[JobStatus.AVAILABLE] -= 1
                slot.counts[JobStatus.LEASED] += 1
                records.append(lease)
            self._spawn(self._commit_leases(session, records))

    def _pick(self, session: Session, wanted: int, now: float) -> list[tuple[HandlerSlot, job_store.ReadyJob]]:
        eligible = [s for s in self.slots.values() if s.active and s.queued and policy.may_serve(s, session, now, self.usage)]
        picks: list[tuple[HandlerSlot, job_store.ReadyJob]] = []
        while len(picks) < wanted and eligible:
            slot = min(eligible, key=lambda s: s.pass_value)
            job = slot.pop()
            if job is None:
                eligible.remove(slot)
                continue
            picks.append((slot, job))
            slot.pass_value += 1.0 / slot.settings.priority
            session.per_handler[slot.handler_id] += 1  # counted for the limits below, undone after
            slot.counts[JobStatus.LEASED] += 1
            if not slot.queued or not policy.may_serve(slot, session, now, self.usage):
                eligible.remove(slot)
        for slot, _ in picks:
            session.per_handler[slot.handler_id] -= 1
            slot.counts[JobStatus.LEASED] -= 1
        return picks

    async def _refill(self, slot: HandlerSlot) -> None:
        try:
            jobs = await self.writer.run(job_store.load_available, slot.handler_id, slot.cursor, REFILL_BATCH)
            for job in jobs:
                if job.job_id not in self.leases and job.job_id not in slot.queued:
                    slot.queued.add(job.job_id)
                    slot.ready.append(job)
            if jobs:
                slot.cursor = max(slot.cursor, jobs[-1].job_id)
            slot.more_in_store = len(jobs) == REFILL_BATCH
        finally:
            slot.refilling = False
        if jobs:
            self.kick()

    async def _commit_leases(self, session: Session, records: list[LeaseRecord]) -> None:
        try:
            ok = await self.writer.run(job_store.lease, session.worker_id, [r.ref for r in records],
                                       records[0].leased_at)
            failed = False
        except Exception:
            log.exception("could not store %d leases; they go back to the queue", len(records))
            ok, failed = set(), True
        batch = []
        for r in records:
            slot = self.slots.get(r.handler_id)
            current = self.leases.get(r.job_id) is r  # not settled by a result meanwhile
            if r.job_id in ok and current and slot is not None:
                if r.deadline is not None:
                    heapq.heappush(self._timeouts, (r.deadline, r.job_id, r.lease_no))
                batch.append(jobs_pb2.Lease(
                    ref=jobs_pb2.JobRef(job_id=r.job_id, lease_no=r.lease_no), handler_id=r.handler_id,
                    job_name=slot.job_name, attempt=r.attempt, script_sha256=slot.script_sha256,
                    environment=slot.environment, input=r.input,
                    timeout_seconds=slot.settings.job_timeout_seconds or 0.0,
                ))
                continue
            session.credit += 1  # the worker still waits for a job for this credit
            if not current:
                continue  # a result settled the job; the counts moved then
            self._forget(r)
            if slot is None:
                continue
            slot.counts[JobStatus.LEASED] -= 1
            if failed:
                slot.counts[JobStatus.AVAILABLE] += 1
                slot.push_front(job_store.ReadyJob(r.job_id, r.lease_no - 1, r.attempt - 1, r.input))
            else:
                log.warning("job %d was not available to lease; recounting", r.job_id)
                slot.on_change()
        if batch:
            session.send(jobs_pb2.ServerMessage(leases=jobs_pb2.LeaseBatch(items=batch)))
        if len(batch) < len(records):
            self.kick()

    def _forget(self, lease: LeaseRecord, *, ran_seconds: float | None = None) -> None:
        """Drop a lease from memory and charge its worker's daily budget: the
        run time the worker reported, or the time since the lease without one."""
        if self.leases.get(lease.job_id) is lease:
            del self.leases[lease.job_id]
            ran = ran_seconds if ran_seconds is not None else time.time() - lease.leased_at
            self.usage.charge(lease.worker_id, lease.handler_id, ran)
        session = self.sessions.get(lease.worker_id)
        if session is not None and lease.job_id in session.leases:
            session.leases.discard(lease.job_id)
            session.per_handler[lease.handler_id] -= 1

    # -- results ------------------------------------------------------------------

    async def on_results(self, session: Session, items: Sequence[jobs_pb2.Result]) -> None:
        session.last_seen = time.monotonic()
        results = [
            job_store.ResultIn(
                job_id=r.ref.job_id, lease_no=r.ref.lease_no,
                output=r.output.decode("utf-8", "replace") if not r.HasField("error") else None,
                error={"type": r.error.type, "message": r.error.message, "traceback": r.error.traceback}
                if r.HasField("error") else None,
                duration_seconds=r.duration_seconds,
            )
            for r in items
        ]
        max_attempts = {h: s.settings.max_attempts for h, s in self.slots.items()}
        leased = {r.job_id: (lease.lease_no, lease.handler_id)
                  for r in results if (lease := self.leases.get(r.job_id)) is not None}
        outcomes, streaks = await self.writer.run(
            job_store.complete, session.worker_id, results, max_attempts, leased, self._maybe_failing)
        acks = []
        touched: set[str] = set()
        for item, outcome in zip(items, outcomes, strict=True):
            accepted = outcome.status is not None
            acks.append(jobs_pb2.ResultAck(
                ref=item.ref,
                outcome=jobs_pb2.ACK_OUTCOME_UNKNOWN if outcome.previous is None else _ACK[accepted],
            ))
            if accepted:
                self._settle(outcome, by=(session.worker_id, item.ref.lease_no), ran_seconds=item.duration_seconds)
                if outcome.failed:
                    session.failed += 1
                else:
                    session.done += 1
                touched.add(outcome.handler_id)
            else:
                lease = self.leases.get(item.ref.job_id)
                if lease is not None and lease.ref == (item.ref.job_id, item.ref.lease_no):
                    self._forget(lease, ran_seconds=item.duration_seconds)
        await self._restore_inputs(outcomes)
        session.send(jobs_pb2.ServerMessage(ack=jobs_pb2.Ack(items=acks)))
        for handler_id in touched:
            slot = self.slots.get(handler_id)
            if slot is not None:
                slot.on_change()
        for handler_id, streak in streaks.items():
            self._on_streak(handler_id, streak)
        self.kick()

    def _settle(self, outcome: job_store.Outcome, *, by: tuple[str, int] | None = None,
                ran_seconds: float | None = None) -> None:
        """Mirror one accepted state change of a job in memory.

        Counts move from where memory had the job: leased if it holds a lease
        record (even one whose commit is in flight), else what the store said.
        """
        assert outcome.previous is not None and outcome.status is not None
        slot = self.slots.get(outcome.handler_id)
        lease = self.leases.get(outcome.job_id)
        was = outcome.previous
        if lease is not None:
            was = JobStatus.LEASED
            own = by == (lease.worker_id, lease.lease_no)
            self._forget(lease, ran_seconds=ran_seconds if own else None)
            other = self.sessions.get(lease.worker_id)
            if other is not None and outcome.status != JobStatus.AVAILABLE and not own:
                # Another lease of this job is out (a result from an older one won): stop it.
                other.send(_revoke([lease], "another worker's result for this job was accepted"))
        if slot is None:
            return
        slot.discard(outcome.job_id)
        slot.counts[was] -= 1
        slot.counts[outcome.status] += 1
        if outcome.ready is not None and lease is not None and lease.input:
            slot.push_front(job_store.ReadyJob(outcome.job_id, outcome.ready.lease_no, outcome.ready.attempts,
                                               lease.input))

    async def _restore_inputs(self, outcomes: Sequence[job_store.Outcome]) -> None:
        """Jobs made available again without an input in memory: read it back."""
        missing = [o for o in outcomes if o.ready is not None and o.job_id not in self._queued_ids(o.handler_id)]
        if not missing:
            return
        inputs = await self.writer.run(job_store.inputs, [o.job_id for o in missing])
        for o in missing:
            slot = self.slots.get(o.handler_id)
            if slot is not None and o.ready is not None and o.job_id in inputs:
                slot.push_front(job_store.ReadyJob(o.job_id, o.ready.lease_no, o.ready.attempts, inputs[o.job_id]))

    def _queued_ids(self, handler_id: str) -> set[int]:
        slot = self.slots.get(handler_id)
        return slot.queued if slot is not None else set()

    # -- timers -----------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(min(0.2, self.heartbeat_interval_seconds / 2))
            try:
                await self._expire()
            except Exception:
                log.exception("timer pass failed")

    async def _flush_worker_counts(self, sessions: Iterable[Session]) -> None:
        counts = {}
        for s in sessions:
            if s.done or s.failed:
                counts[s.worker_id] = (s.done, s.failed)
                s.done = s.failed = 0
        if counts:
            await self.writer.run(catalog.add_worker_counts, counts)

    async def _expire(self) -> None:
        mono, now = time.monotonic(), time.time()
        if mono - self._last_flush >= 1.0:
            self._last_flush = mono
            await self._flush_worker_counts(list(self.sessions.values()))
        for session in list(self.sessions.values()):
            if mono - session.last_seen > self.heartbeat_timeout_seconds:
                log.warning("worker %s (%s) missed its heartbeats; disconnecting it", session.name, session.worker_id)
                await self.disconnect(session)
        gone = [w for w, deadline in self._orphaned.items() if deadline <= mono]
        for worker_id in gone:
            del self._orphaned[worker_id]
            leases = [lease for lease in self.leases.values() if lease.worker_id == worker_id]
            if leases:
                log.warning("worker %s is gone; %d of its jobs go back to the queue", worker_id, len(leases))
                await self._requeue(leases, {"type": "WorkerLost", "message": "the worker disappeared"})
        expired = []
        while self._timeouts and self._timeouts[0][0] <= now:
            _, job_id, lease_no = heapq.heappop(self._timeouts)
            lease = self.leases.get(job_id)
            if lease is not None and lease.lease_no == lease_no:
                expired.append(lease)
        if expired:
            self._send_revokes(expired, "job timeout")
            await self._requeue(expired, {"type": "JobTimeout", "message": "the job ran past its job-timeout"})

    def _send_revokes(self, leases: Sequence[LeaseRecord], reason: str) -> None:
        by_worker: dict[str, list[LeaseRecord]] = {}
        for lease in leases:
            by_worker.setdefault(lease.worker_id, []).append(lease)
        for worker_id, group in by_worker.items():
            session = self.sessions.get(worker_id)
            if session is not None:
                session.send(_revoke(group, reason))

    async def _requeue(self, leases: Sequence[LeaseRecord], reason: dict[str, str], *, count_attempt: bool = True) -> None:
        if not leases:
            return
        for lease in leases:
            self._forget(lease)
        max_attempts = {
            h: (s.settings.max_attempts if count_attempt else 1_000_000_000) for h, s in self.slots.items()
        }
        outcomes = await self.writer.run(job_store.requeue, [lease.ref for lease in leases], reason, max_attempts)
        by_job = {lease.job_id: lease for lease in leases}
        touched = set()
        for o in outcomes:
            slot = self.slots.get(o.handler_id)
            if slot is None or o.status is None:
                continue
            slot.counts[JobStatus.LEASED] -= 1
            slot.counts[o.status] += 1
            touched.add(o.handler_id)
            if o.ready is not None and by_job[o.job_id].input:
                slot.push_front(job_store.ReadyJob(o.job_id, o.ready.lease_no, o.ready.attempts, by_job[o.job_id].input))
        await self._restore_inputs(outcomes)
        for handler_id in touched:
            self.slots[handler_id].on_change()
        self.kick()


def _revoke(leases: Sequence[LeaseRecord], reason: str) -> jobs_pb2.ServerMessage:
    return jobs_pb2.ServerMessage(revoke=jobs_pb2.Revoke(
        refs=[jobs_pb2.JobRef(job_id=lease.job_id, lease_no=lease.lease_no) for lease in leases], reason=reason))
