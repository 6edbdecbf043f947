"""The job store's compare-and-set, driven by a Hypothesis state machine on a real SQLite database.

Whatever order leases, results (current, stale, duplicate, failed) and
requeues arrive in, each job ends with at most one accepted final result,
lease numbers never go back, and the store agrees with a simple model.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import Engine, select

from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import handlers, jobs

MAX_ATTEMPTS = 2
_dbs = itertools.count()


class JobStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.path = Path(tempfile.gettempdir()) / f"netdist-machine-{os.getpid()}-{next(_dbs)}.db"
        self.path.unlink(missing_ok=True)
        self.engine: Engine = open_engine(f"sqlite:///{self.path}")
        with self.engine.begin() as conn:
            conn.execute(handlers.insert().values(
                id="h", package="p", handler="H", job_name="j", script_sha256="0" * 64, script_source="",
                settings_json="{}", custom_json="{}", state="running", message="", handler_state_json="{}",
                summary="", total=None, exhausted=False, sequenced_errors=0, created_at=0.0))
        self.status: dict[int, JobStatus] = {}
        self.lease_no: dict[int, int] = {}
        self.accepted: dict[int, int] = {}  # job -> final results accepted
        self.maybe_failing: set[str] = {"h"}

    def teardown(self) -> None:
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def _with(self, status: JobStatus) -> list[int]:
        return sorted(j for j, s in self.status.items() if s == status)

    @rule(n=st.integers(1, 4))
    def enqueue(self, n: int) -> None:
        self._run(job_store.insert, "h", [("{}", "null")] * n)
        rows = self._run(lambda c: c.execute(select(jobs.c.id)).scalars().all())
        for job_id in rows:
            self.status.setdefault(job_id, JobStatus.AVAILABLE)
            self.lease_no.setdefault(job_id, 0)

    @precondition(lambda self: self._with(JobStatus.AVAILABLE))
    @rule(data=st.data(), stale=st.booleans())
    def lease(self, data: st.DataObject, stale: bool) -> None:
        job_id = data.draw(st.sampled_from(self._with(JobStatus.AVAILABLE)))
        new = self.lease_no[job_id] + (2 if stale else 1)  # a stale view of the lease number
        got = self._run(job_store.lease, "w", [(job_id, new)], 1.0)
        if stale:
            assert got == set()
        else:
            assert got == {job_id}
            self.status[job_id], self.lease_no[job_id] = JobStatus.LEASED, new

    @precondition(lambda self: self.status)
    @rule(data=st.data(), fail=st.booleans(), older=st.booleans(), known=st.booleans())
    def result(self, data: st.DataObject, fail: bool, older: bool, known: bool) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.status)))
        lease_no = max(0, self.lease_no[job_id] - 1) if older else self.lease_no[job_id]
        item = job_store.ResultIn(job_id=job_id, lease_no=lease_no, output=None if fail else "1",
                                  error={"type": "E", "message": "m", "traceback": ""} if fail else None,
                                  duration_seconds=0.1)
        view = {job_id: (self.lease_no[job_id], "h")} if known and self.status[job_id] == JobStatus.LEASED else {}
        (outcome,), _ = self._run(job_store.complete, "w", [item], {"h": MAX_ATTEMPTS}, view, self.maybe_failing)
        before = self.status[job_id]
        if before in (JobStatus.SUCCEEDED, JobStatus.ERRORED):
            assert outcome.status is None  # a duplicate: the job already has its result
            return
        assert outcome.previous == before and outcome.status is not None
        attempts = self._attempts(job_id)
        if not fail:
            self.status[job_id] = JobStatus.SUCCEEDED
            self.accepted[job_id] = self.accepted.get(job_id, 0) + 1
        else:
            self._failed(job_id, attempts)
        assert outcome.status == self.status[job_id]

    @precondition(lambda self: self._with(JobStatus.LEASED))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._with(JobStatus.LEASED)))
        attempts = self._attempts(job_id)
        (outcome,) = self._run(job_store.requeue, [(job_id, self.lease_no[job_id])], {"type": "WorkerLost"},
                               {"h": MAX_ATTEMPTS})
        self._failed(job_id, attempts)
        assert outcome.status == self.status[job_id]

    def _failed(self, job_id: int, attempts: int) -> None:
        """A failed attempt: errored for good at the cap, else back with a new lease number."""
        if attempts >= MAX_ATTEMPTS:
            self.status[job_id] = JobStatus.ERRORED
            self.accepted[job_id] = self.accepted.get(job_id, 0) + 1
        else:
            self.status[job_id] = JobStatus.AVAILABLE
            self.lease_no[job_id] += 1

    def _attempts(self, job_id: int) -> int:
        return int(self._run(lambda c: c.execute(select(jobs.c.attempts).where(jobs.c.id == job_id)).scalar_one()))

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        rows = self._run(lambda c: c.execute(select(jobs.c.id, jobs.c.status, jobs.c.lease_no)).all())
        for job_id, status, lease_no in rows:
            assert status == self.status[job_id], (job_id, status, self.status[job_id])
            assert lease_no == self.lease_no[job_id]
        assert all(n == 1 for n in self.accepted.values())


JobStoreMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestJobStore = JobStoreMachine.TestCase
