"""The lease table against a model of the store, driven by a Hypothesis state machine.

The machine plays the dispatcher: it feeds the table every event a server
sees (handlers, workers coming and going, capacity, leases, starts, results
from the right worker and from wrong ones, hand-backs, timeouts, clocks that
jump) and applies the writes the table asks for to ``ModelStore``, which
follows the same compare-and-set rules as the SQL in store/jobs.py. After
every step the table must agree with the store, job by job; and the promises
hold: one accepted result per job, results only from the current lease's
holder, attempts charged only for started leases, lease numbers only grow
(across a kill -9 of the server too: a lease goes to its worker before its
commit, so a restarted server must never hand out a number that went out and
was never stored), no worker above its room, no prefetch while a handler is
failing.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from netdist.jobscript import JobSettings
from netdist.server.lease_model import (
    MAX_PREFETCH,
    Effects,
    HandlerSpec,
    Lease,
    ReadyJob,
    Requeue,
    ResultIn,
    Settlement,
    Verdict,
    WorkerInfo,
)
from netdist.server.leases import LeaseTable
from netdist.server.states import JobStatus
from tests.clock import ManualClock

GRACE = 2.0
SILENT = 15.0
WORKERS = ("w1", "w2", "w3")
HANDLERS = ("h1", "h2")


@dataclasses.dataclass
class Row:
    handler_id: str
    status: JobStatus = JobStatus.AVAILABLE
    lease_no: int = 0
    worker_id: str | None = None
    attempts: int = 0

    def lazily_held(self, lease_no: int) -> bool:
        """Whether a lease of this number may be held lazily: the job available below it."""
        return self.status == JobStatus.AVAILABLE and self.lease_no < lease_no


class ModelStore:
    """The jobs table, with the compare-and-set rules of store/jobs.py."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.next_id = 1
        self.accepted: Counter[int] = Counter()  # final results stored per job

    def insert(self, handler_id: str, n: int) -> None:
        for _ in range(n):
            self.rows[self.next_id] = Row(handler_id)
            self.next_id += 1

    def load_available(self, handler_id: str, after: int, limit: int) -> list[ReadyJob]:
        found = [
            ReadyJob(j, r.lease_no, r.attempts, b"{}")
            for j, r in sorted(self.rows.items())
            if r.handler_id == handler_id and r.status == JobStatus.AVAILABLE and j > after
        ]
        return found[:limit]

    def skip_unstored_leases(self) -> None:
        for r in self.rows.values():
            if r.status == JobStatus.AVAILABLE:
                r.lease_no += 1

    def lease(self, leases: list[Lease]) -> set[int]:
        done = set()
        for x in leases:
            r = self.rows[x.job_id]
            if r.status == JobStatus.AVAILABLE and r.lease_no < x.lease_no:
                r.status, r.lease_no, r.worker_id = JobStatus.LEASED, x.lease_no, x.worker_id
                done.add(x.job_id)
        return done

    def store_results(self, settlements: list[Settlement]) -> set[int]:
        done = set()
        for s in settlements:
            r = self.rows[s.result.job_id]
            held = (r.status, r.lease_no, r.worker_id) == (JobStatus.LEASED, s.result.lease_no, s.worker_id)
            if not held and not r.lazily_held(s.result.lease_no):
                continue
            r.attempts += 1
            r.status, r.lease_no, r.worker_id = s.status, s.result.lease_no, s.worker_id
            if s.status == JobStatus.AVAILABLE:
                r.lease_no += 1
            else:
                self.accepted[s.result.job_id] += 1
            done.add(s.result.job_id)
        return done

    def requeue(self, requeues: list[Requeue]) -> set[int]:
        done = set()
        for q in requeues:
            r = self.rows[q.job_id]
            if (r.status, r.lease_no) != (JobStatus.LEASED, q.lease_no) and not r.lazily_held(q.lease_no):
                continue
            r.lease_no, r.worker_id = q.lease_no, q.worker_id
            if q.final:
                r.status, r.attempts = JobStatus.ERRORED, r.attempts + 1
                self.accepted[q.job_id] += 1
            else:
                r.status, r.lease_no, r.attempts = JobStatus.AVAILABLE, r.lease_no + 1, r.attempts + int(q.charged)
            done.add(q.job_id)
        return done

    def counts(self, handler_id: str) -> Counter[str]:
        return Counter(r.status.value for r in self.rows.values() if r.handler_id == handler_id)


def job_settings(draw: st.DrawFn, handler_id: str) -> JobSettings:
    return JobSettings(
        package="p",
        handler="H",
        job=handler_id,
        max_attempts=draw(st.integers(1, 3)),
        job_timeout_seconds=draw(st.sampled_from([None, 5.0])),
        max_parallel_jobs=draw(st.sampled_from([None, 2])),
        max_sequenced_errors=draw(st.sampled_from([None, 3])),
        priority=draw(st.sampled_from([1.0, 2.0])),
    )


class LeaseTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.table = LeaseTable(clock=self.clock, reconnect_grace_seconds=GRACE, silent_after_seconds=SILENT)
        self.store = ModelStore()
        self.specs: dict[str, HandlerSpec] = {}
        self.last_lease_no: dict[int, int] = {}  # the highest lease number that went out, per job
        self.started_refs: set[tuple[int, int]] = set()  # leases the workers reported started
        self.charges: Counter[int] = Counter()  # attempts the model expects per job

    # -- the dispatcher's part: apply what the table asks -------------------------------

    def apply(self, effects: Effects) -> None:
        for q in effects.requeues:
            assert not q.charged or (q.job_id, q.lease_no) in self.started_refs, f"charged an unstarted lease {q}"
            self.charges[q.job_id] += int(q.charged)
        assert self.store.requeue(effects.requeues) == {q.job_id for q in effects.requeues}

    @initialize(data=st.data())
    def handlers(self, data: st.DataObject) -> None:
        for handler_id in HANDLERS:
            spec = HandlerSpec(
                handler_id=handler_id,
                job_name=handler_id,
                script_sha256="0" * 64,
                environment=(),
                settings=data.draw(st.composite(job_settings)(handler_id)),
            )
            self.specs[handler_id] = spec
            self.table.add_handler(spec, counts={}, streak=0, active=True)
            self.enqueue(handler_id, data.draw(st.integers(1, 8)))
        for worker in WORKERS[:2]:
            self.connect(worker, data.draw(st.integers(1, 3)), keep=True)
            self.table.set_capacity(worker, data.draw(st.integers(1, 6)))

        # -- rules ---------------------------------------------------------------------------
        self.dispatch()

    @rule(handler=st.sampled_from(HANDLERS), n=st.integers(1, 6))
    def enqueue(self, handler: str, n: int) -> None:
        self.store.insert(handler, n)
        self.table.enqueued(handler, n)
        self.dispatch()

    @rule(handler=st.sampled_from(HANDLERS), n=st.integers(1, 6), fails=st.booleans())
    def enqueue_reading_the_refill_back(self, handler: str, n: int, fails: bool) -> None:
        """As the handler runtime enqueues: the transaction that adds the jobs reads the queue's refill."""
        cursor = self.table.refill_with_enqueue(handler, low_water=1000)
        if fails:  # the write failed: nothing was added
            if cursor is not None:
                self.table.refill_failed(handler)
            self.dispatch()
            return
        self.store.insert(handler, n)
        jobs = self.store.load_available(handler, cursor, 4) if cursor is not None else None
        self.table.enqueued(handler, n)
        if jobs is not None:
            self.table.refilled(handler, jobs, more=len(jobs) == 4)
        self.dispatch()

    @rule()
    def refill(self) -> None:
        for handler_id, cursor in self.table.refills_wanted(low_water=1000):
            jobs = self.store.load_available(handler_id, cursor, 4)
            self.table.refilled(handler_id, jobs, more=len(jobs) == 4)

    @rule(worker=st.sampled_from(WORKERS), slots=st.integers(1, 3), keep=st.booleans())
    def connect(self, worker: str, slots: int, keep: bool) -> None:
        """A (re)connect; ``keep``: the same process still holds its leases (and has the same
        slots), else a restarted one lost them."""
        if keep and worker in self.table.workers:
            slots = self.table.workers[worker].slots
        held = [lease.ref for lease in self.table.leases_of(worker_id=worker) if keep and lease.sent]
        self.apply(self.table.connect(WorkerInfo(worker_id=worker, name=worker, labels={}, slots=slots), held))
        self.table.set_capacity(worker, slots + 2)
        self.dispatch()

    @rule(worker=st.sampled_from(WORKERS))
    def disconnect(self, worker: str) -> None:
        self.table.disconnect(worker)
        self.dispatch()

    @rule(worker=st.sampled_from(WORKERS), jobs=st.integers(0, 2**31 - 1) | st.integers(0, 8))
    def capacity(self, worker: str, jobs: int) -> None:
        self.table.set_capacity(worker, jobs)
        self.dispatch()

    @rule()
    def failed_lease_write(self) -> None:
        """A dispatch pass whose lease write fails: the leases, already sent, are revoked and the
        jobs go back uncharged, never to be leased again at the numbers sent."""
        self.refill()
        leases = [x for x in self.table.pick() if not x.stored]  # the others are held lazily: not written
        self._sent(leases)
        effects = self.table.leases_failed(leases)
        assert {r for v in effects.revocations for r in v.refs} == {x.ref for x in leases if x.sent}
        self.apply(effects)

    @rule(fails=st.booleans())
    def write_leases_held_lazily(self, fails: bool) -> None:
        """The timer writes the leases held lazily that lasted (here: all of them), or the server
        stops and writes them; the store takes each, or the write fails and they wait."""
        due = self.table.due_leases(math.inf)
        assert all(x.sent and x.stored and not x.settling for x in due)
        if fails:
            self.table.write_later(due)
            assert all(not x.written for x in due)
            return
        stored = self.store.lease(due)
        assert stored == {x.job_id for x in due}
        send, refused, effects = self.table.leases_stored(due, stored)
        assert not send and not refused
        self.apply(effects)

    @rule(some_stored=st.booleans(), requeue_lost=st.booleans(), data=st.data())
    def server_killed_while_leases_are_on_the_way(
        self, some_stored: bool, requeue_lost: bool, data: st.DataObject
    ) -> None:
        """kill -9 of the server after it sent leases and before their commit (``some_stored``: a
        part of them reached the store; ``requeue_lost``: the write that took a handler's leases
        back was on its way too, and its jobs were leased again). A new table is built from the
        store, as a restarted server builds it; its workers come back holding what they were
        sent. No lease number that went out may be handed out again (``_sent`` asserts that
        lease numbers only grow)."""
        if requeue_lost:
            self.table.revoke_handler(HANDLERS[0], "stopped")  # its requeue write never commits
        leases = self._new_leases()
        if some_stored and leases:
            self.store.lease(data.draw(st.lists(st.sampled_from(leases), unique_by=lambda x: x.job_id)))
        holding = {w: [x.ref for x in self.table.leases_of(worker_id=w) if x.sent] for w in self.table.workers}
        connected = {w: s.slots for w, s in self.table.workers.items() if s.connected}
        self.table = LeaseTable(clock=self.clock, reconnect_grace_seconds=GRACE, silent_after_seconds=SILENT)
        self.store.skip_unstored_leases()
        for handler_id, spec in self.specs.items():
            self.table.add_handler(spec, counts=self.store.counts(handler_id), streak=0, active=True)
        for job_id, row in sorted(self.store.rows.items()):
            if row.status == JobStatus.LEASED:
                self.table.adopt(
                    Lease(
                        job_id=job_id,
                        lease_no=row.lease_no,
                        handler_id=row.handler_id,
                        worker_id=row.worker_id or "",
                        attempt=row.attempts + 1,
                        input=b"{}",
                        leased_at=self.clock.time(),
                        leased_mono=self.clock.monotonic(),
                    )
                )
        for worker, slots in connected.items():
            info = WorkerInfo(worker_id=worker, name=worker, labels={}, slots=slots)
            adopted = {x.ref for x in self.table.leases_of(worker_id=worker)}
            effects = self.table.connect(info, holding.get(worker, []))
            # What it holds that the store never took is revoked at once: that job runs elsewhere.
            revoked = {r for v in effects.revocations for r in v.refs}
            assert revoked == set(holding.get(worker, [])) - adopted, (revoked, holding.get(worker), adopted)
            self.apply(effects)
            self.table.set_capacity(worker, slots + 2)
        self.dispatch()

    def _new_leases(self) -> list[Lease]:
        """A pick with room for new leases (a fresh worker joins, new jobs come), not yet stored."""
        self.apply(self.table.remove_worker("w3", "make room")[0])
        self.apply(self.table.connect(WorkerInfo(worker_id="w3", name="w3", labels={}, slots=3), []))
        self.table.set_capacity("w3", 5)
        self.table.set_active(HANDLERS[0], True)
        self.store.insert(HANDLERS[0], 3)
        self.table.enqueued(HANDLERS[0], 3)
        self.refill()
        leases = self.table.pick()
        self._sent(leases)
        return leases

    def _sent(self, leases: list[Lease]) -> None:
        """Leases of a pick, or stored and sent after it: the ones marked sent went to their workers."""
        for lease in [x for x in leases if x.sent]:  # their numbers only grow, whatever became of the ones before
            assert lease.lease_no > self.last_lease_no.get(lease.job_id, 0), (lease, self.last_lease_no)
            self.last_lease_no[lease.job_id] = lease.lease_no

    @rule(data=st.data(), event=st.sampled_from(["revoke", "remove", "hand_back", "result", "reconnect", "lost"]))
    def events_while_a_lease_write_is_on_the_way(self, data: st.DataObject, event: str) -> None:
        """Something happens between the pick and the commit of its leases (a fresh worker
        joins, so that there is room for new leases)."""
        leases = self._new_leases()
        if not leases:
            return
        some = data.draw(st.sampled_from(leases))
        accepted: list[Settlement] = []
        if event == "revoke":
            self.apply(self.table.revoke_handler(some.handler_id, "stopped"))
        elif event == "remove":
            self.apply(self.table.remove_worker(some.worker_id, "removed")[0])
        elif event == "hand_back":  # those written come back once stored, those held lazily at once
            effects = self.table.hand_back(some.worker_id, [x.ref for x in leases], "not now")
            assert {q.job_id for q in effects.requeues} <= {x.job_id for x in leases if not x.written}
            self.apply(effects)
        elif event == "result":  # a fast job: its result is stored after its lease (the writer's order)
            result = ResultIn(job_id=some.job_id, lease_no=some.lease_no, output="1", error=None, duration_seconds=0.01)
            verdicts, accepted, effects = self.table.settle(some.worker_id, [result])
            assert verdicts == ([Verdict.ACCEPTED] if some.sent else [Verdict.NOT_CURRENT])
            if accepted:
                self.started_refs.add(result.ref)
            self.apply(effects)
        elif event == "reconnect":
            self.connect(some.worker_id, slots=3, keep=True)
        else:
            self.table.disconnect(some.worker_id)
            self.clock.advance(GRACE + 0.5)
            self.apply(self.table.tick())
        written = [x for x in leases if x.written]
        stored = self.store.lease(written)
        send, refused, effects = self.table.leases_stored(written, stored)
        self._sent(send)
        assert not refused
        self.apply(effects)
        if accepted:
            self._store(accepted)
        self.dispatch()

    def dispatch(self) -> None:
        """What the dispatcher does after every event: refill, pick, store the leases."""
        self.refill()
        before = {w: (len(s.jobs), s.room(), s.free_slots()) for w, s in self.table.workers.items()}
        leases = self.table.pick()
        per_worker = Counter(lease.worker_id for lease in leases)
        for worker_id, n in per_worker.items():
            held, room, free = before[worker_id]
            assert n <= room, "a worker got more than its room"
            state = self.table.workers[worker_id]
            # Never more than asked, nor more than its slots plus about 50 ms of work per slot
            # by the durations it reported (nothing before the first one).
            prefetch = 0 if state.ewma_seconds is None else min(MAX_PREFETCH, int(state.slots * 0.05 / 0.01))
            assert held + n <= min(state.capacity, state.slots + prefetch), (held, n, state)
            probation = [
                x for x in leases if x.worker_id == worker_id and self.table.handlers[x.handler_id].on_probation
            ]
            assert len(probation) <= max(0, free), "prefetch for a handler on probation"
        for lease in leases:
            assert not self.table.handlers[lease.handler_id].failing
        for queue in self.table.handlers.values():
            limit = queue.settings.max_parallel_jobs
            assert limit is None or queue.counts[JobStatus.LEASED] <= limit
        self._sent(leases)
        written = [lease for lease in leases if not lease.stored]  # the others are held lazily
        stored = self.store.lease(written)
        assert stored == {lease.job_id for lease in written}, "the table leased what the store did not have"
        send, refused, effects = self.table.leases_stored(written, stored)
        self._sent(send)
        assert not refused
        assert all(lease.sent for lease in leases if self.table.leases.get(lease.job_id) is lease)
        self.apply(effects)

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(WORKERS))
        mine = [lease.ref for lease in self.table.leases_of(worker_id=worker) if lease.sent]
        refs = data.draw(st.lists(st.sampled_from(mine), unique=True)) if mine else []
        guess = (data.draw(st.integers(1, 50)), data.draw(st.integers(0, 9)))  # usually no lease of this worker
        lease = self.table.current(worker, guess)
        if lease is not None and lease.sent:
            self.started_refs.add(guess)
        self.table.started(worker, [*refs, guess])
        self.started_refs.update(refs)

    @precondition(lambda self: self.table.leases)
    @rule(
        data=st.data(),
        fail=st.booleans(),
        which=st.sampled_from(["current", "current", "older", "newer"]),
        twice=st.booleans(),
    )
    def result(self, data: st.DataObject, fail: bool, which: str, twice: bool) -> None:
        """A result from a lease's holder: for its current lease, or an older or newer number."""
        job_id = data.draw(st.sampled_from(sorted(self.table.leases)))
        self._result(job_id, self.table.leases[job_id].worker_id, fail=fail, which=which, twice=twice)

    @rule(data=st.data(), fail=st.booleans(), which=st.sampled_from(["current", "older", "newer"]))
    def forged_result(self, data: st.DataObject, fail: bool, which: str) -> None:
        """A result from any worker for any job."""
        job_id = data.draw(st.sampled_from(sorted(self.store.rows)))
        self._result(job_id, data.draw(st.sampled_from(WORKERS)), fail=fail, which=which, twice=False)

    def _result(self, job_id: int, worker: str, *, fail: bool, which: str, twice: bool) -> None:
        row = self.store.rows[job_id]
        lease_no = row.lease_no + {"current": 0, "older": -1, "newer": 1}[which]
        result = ResultIn(
            job_id=job_id,
            lease_no=lease_no,
            output=None if fail else "1",
            error={"type": "E", "message": "m", "traceback": ""} if fail else None,
            duration_seconds=0.01,
        )
        holder = self.table.current(worker, result.ref)
        verdicts, accepted, effects = self.table.settle(worker, [result])
        current = (row.status, row.lease_no, row.worker_id) == (JobStatus.LEASED, lease_no, worker)
        lazy = holder is not None and not holder.written and row.lazily_held(lease_no)
        assert (verdicts == [Verdict.ACCEPTED]) == ((current or lazy) and holder is not None and holder.stored)
        if verdicts == [Verdict.ACCEPTED]:
            self.started_refs.add(result.ref)  # a result implies a start
            if twice:
                again, more, _ = self.table.settle(worker, [result])
                assert again == [Verdict.IN_FLIGHT] and not more
        self.apply(effects)
        self._store(accepted)

    def _settle(self, worker: str, result: ResultIn) -> None:
        _, accepted, effects = self.table.settle(worker, [result])
        self.started_refs.add(result.ref)
        self.apply(effects)
        self._store(accepted)

    def _store(self, accepted: list[Settlement]) -> None:
        stored = self.store.store_results(accepted)
        assert stored == {s.result.job_id for s in accepted}
        self.charges.update(s.result.job_id for s in accepted)
        self.apply(self.table.settled(accepted, stored))
        self.dispatch()

    @rule(data=st.data())
    def hand_back(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(WORKERS))
        mine = [lease.ref for lease in self.table.leases_of(worker_id=worker)]
        refs = data.draw(st.lists(st.sampled_from(mine), unique=True)) if mine else []
        effects = self.table.hand_back(worker, refs, "stopping")
        assert not any(q.charged for q in effects.requeues)
        self.apply(effects)
        self.dispatch()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 6.0, 20.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for state in self.table.workers.values():  # connected workers keep talking, unless this was long
            if state.connected and seconds < SILENT:
                self.table.seen(state.worker_id)
        self.apply(self.table.tick())
        self.dispatch()

    @rule(hours=st.sampled_from([-1.0, 1.0, -25.0]))
    def jump_wall_clock(self, hours: float) -> None:
        """Someone sets the clock: deadlines run on monotonic time, so nothing expires."""
        self.clock.jump_wall(hours * 3600)
        effects = self.table.tick()
        assert not any(q.error["type"] == "JobTimeout" for q in effects.requeues)
        self.apply(effects)
        self.dispatch()

    @rule(handler=st.sampled_from(HANDLERS))
    def revoke_handler(self, handler: str) -> None:
        effects = self.table.revoke_handler(handler, "stopped")
        assert not any(q.charged for q in effects.requeues)
        self.apply(effects)
        self.dispatch()

    @rule(worker=st.sampled_from(WORKERS))
    def remove_worker(self, worker: str) -> None:
        effects, _ = self.table.remove_worker(worker, "removed")
        self.apply(effects)
        self.dispatch()

    @rule(handler=st.sampled_from(HANDLERS))
    def process(self, handler: str) -> None:
        """The handler's runtime processes what is stored: succeeded -> processed, errored -> failed."""
        for was, now in ((JobStatus.SUCCEEDED, JobStatus.PROCESSED), (JobStatus.ERRORED, JobStatus.FAILED)):
            ids = [j for j, r in self.store.rows.items() if r.handler_id == handler and r.status == was]
            for j in ids:
                self.store.rows[j].status = now
            self.table.processed(handler, was=was, count=len(ids))
        self.dispatch()

    @rule(handler=st.sampled_from(HANDLERS), active=st.booleans())
    def pause_or_resume(self, handler: str, active: bool) -> None:
        self.table.set_active(handler, active)

        # -- invariants --------------------------------------------------------------------------
        self.dispatch()

    @invariant()
    def the_table_agrees_with_the_store(self) -> None:
        lazy = Counter(x.handler_id for x in self.table.leases.values() if not x.written)  # available in the store
        for handler_id, queue in self.table.handlers.items():
            stored = self.store.counts(handler_id)
            stored[JobStatus.AVAILABLE] -= lazy[handler_id]
            stored[JobStatus.LEASED] += lazy[handler_id]
            assert +queue.counts == +stored, (handler_id, dict(queue.counts), dict(stored))
            for job in queue.ready:
                if job.job_id in queue.queued:
                    row = self.store.rows[job.job_id]
                    # at the store's number, or above it when a lease write failed (its number went out)
                    assert (row.status, row.attempts) == (JobStatus.AVAILABLE, job.attempts)
                    assert row.lease_no == job.lease_no if job.stored else row.lease_no <= job.lease_no
        for lease in self.table.leases.values():
            row = self.store.rows[lease.job_id]
            if lease.stored and lease.written:
                assert (row.status, row.lease_no, row.worker_id) == (JobStatus.LEASED, lease.lease_no, lease.worker_id)
            elif lease.stored:  # held lazily: its job stays available, one number below it
                assert (row.status, row.lease_no) == (JobStatus.AVAILABLE, lease.lease_no - 1)
            assert lease.attempt == row.attempts + 1
        leased = {j for j, r in self.store.rows.items() if r.status == JobStatus.LEASED}
        assert leased == {j for j, lease in self.table.leases.items() if lease.stored and lease.written}

    @invariant()
    def one_final_result_per_job_and_attempts_only_for_starts(self) -> None:
        assert all(n == 1 for n in self.store.accepted.values())
        for job_id, row in self.store.rows.items():
            assert row.attempts == self.charges[job_id], (job_id, row.attempts, self.charges[job_id])

    @invariant()
    def no_prefetch_waits_for_a_handler_on_probation(self) -> None:
        """After a failed result, a handler's unstarted jobs queued on workers came back."""
        for queue in self.table.handlers.values():
            if not queue.on_probation:
                continue
            waiting = Counter(
                x.worker_id for x in self.table.leases_of(handler_id=queue.handler_id) if x.started_mono is None
            )
            for worker_id, n in waiting.items():
                assert n <= self.table.workers[worker_id].slots, (queue.handler_id, worker_id, n)

    @invariant()
    def handlers_list_sees_each_handlers_leases_as_one_handler_does(self) -> None:
        grouped = self.table.leases_by_handler(2)
        handlers = {lease.handler_id for lease in self.table.leases.values()}
        assert grouped == {h: self.table.leases_of(handler_id=h)[:2] for h in handlers}

    @invariant()
    def each_worker_holds_what_its_leases_say(self) -> None:
        for worker_id, state in self.table.workers.items():
            assert state.jobs == {j for j, lease in self.table.leases.items() if lease.worker_id == worker_id}
            per = Counter(lease.handler_id for lease in self.table.leases.values() if lease.worker_id == worker_id)
            assert +state.per_handler == per


LeaseTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=80, deadline=None)
TestLeaseTable = LeaseTableMachine.TestCase
