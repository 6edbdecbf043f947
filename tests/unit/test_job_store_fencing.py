"""The store fences by itself: its compare-and-set SQL, driven by a Hypothesis state machine
on a real SQLite database, with writers that may be stale or wrong.

The lease table is the first fence; the store is the second, so that a second
server on the same store (or a bug) can never make a stale lease count. Here
leases, results and requeues arrive with current, older and newer lease
numbers and from the right and the wrong worker; the store must take exactly
the current ones (a stored lease's, or a lease held lazily: its job available
below its number), charge attempts as told, and agree with a simple model.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import Engine, select

from netdist.server.lease_model import Lease, Requeue, ResultIn, Settlement
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import job_attempts, jobs
from tests.store_rows import insert_handler

_dbs = itertools.count()
_migrated: list[Path] = []
WORKERS = ("w1", "w2")


def _fresh_store(path: Path) -> None:
    """Put an empty, migrated store at ``path``: a copy of one migrated once per run, since running
    the Alembic migrations was most of each example's cost (0.3 to 0.6 s of about 0.6)."""
    if not _migrated:
        template = Path(tempfile.gettempdir()) / f"netdist-fencing-{os.getpid()}-migrated.db"
        template.unlink(missing_ok=True)
        open_engine(f"sqlite:///{template}").dispose()  # the last close checkpoints the WAL into the file
        atexit.register(template.unlink, missing_ok=True)
        _migrated.append(template)
    shutil.copyfile(_migrated[0], path)


@dataclasses.dataclass
class Row:
    status: JobStatus = JobStatus.AVAILABLE
    lease_no: int = 0
    worker: str | None = None
    attempts: int = 0
    history: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)
    """Attempts that did not end the job: (attempt, lease_no, outcome), as job_attempts must hold them."""


def _lazy(row: Row, lease_no: int) -> bool:
    """Whether ``lease_no`` may be a lease held lazily (server/leases.py): its job available below it.
    Only the lease table knows its worker; the store takes the write from any."""
    return row.status == JobStatus.AVAILABLE and row.lease_no < lease_no


class JobStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.path = Path(tempfile.gettempdir()) / f"netdist-fencing-{os.getpid()}-{next(_dbs)}.db"
        _fresh_store(self.path)
        self.engine: Engine = open_engine(f"sqlite:///{self.path}")
        with self.engine.begin() as conn:
            insert_handler(conn)
        self.rows: dict[int, Row] = {}
        self.finals: dict[int, int] = {}  # final results stored per job
        self.at = 100.0

    def teardown(self) -> None:
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _run(self, fn: Any, *args: Any) -> Any:
        self.at += 1.0
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def _pick(self, data: st.DataObject) -> tuple[int, Row, int, str]:
        """A job, and a lease number and worker that are right or wrong for it."""
        job_id = data.draw(st.sampled_from(sorted(self.rows)))
        row = self.rows[job_id]
        lease_no = row.lease_no + data.draw(st.sampled_from([0, 0, -1, 1]))
        worker = row.worker if row.worker and data.draw(st.booleans()) else data.draw(st.sampled_from(WORKERS))
        return job_id, row, lease_no, worker

    @rule(n=st.integers(1, 4))
    def enqueue(self, n: int) -> None:
        self._run(lambda c: job_store.insert(c, "h", job_store.reserve_job_ids(c, n), [("{}", "null")] * n))
        for job_id in self._run(lambda c: c.execute(select(jobs.c.id)).scalars().all()):
            self.rows.setdefault(job_id, Row())

    @precondition(lambda self: self.rows)
    @rule(data=st.data())
    def lease(self, data: st.DataObject) -> None:
        job_id, row, lease_no, worker = self._pick(data)
        new = lease_no + 1
        lease = Lease(
            job_id=job_id,
            lease_no=new,
            handler_id="h",
            worker_id=worker,
            attempt=row.attempts + 1,
            input=b"{}",
            leased_at=self.at + 1,
            leased_mono=0.0,
        )
        got = self._run(job_store.lease, [lease])
        # below the new number, not at the one before: a lease sent and never stored may have
        # used that one (server/leases.py)
        if row.status == JobStatus.AVAILABLE and row.lease_no < new:
            assert got == {job_id}
            row.status, row.lease_no, row.worker = JobStatus.LEASED, new, worker
        else:
            assert got == set()

    @rule()
    def server_starts(self) -> None:
        """A restart raises every available job's lease number: none sent before it is used again."""
        raised = self._run(job_store.skip_unstored_leases)
        available = [row for row in self.rows.values() if row.status == JobStatus.AVAILABLE]
        assert raised == len(available)
        for row in available:
            row.lease_no += 1

    @precondition(lambda self: self.rows)
    @rule(data=st.data(), outcome=st.sampled_from([JobStatus.SUCCEEDED, JobStatus.ERRORED, JobStatus.AVAILABLE]))
    def result(self, data: st.DataObject, outcome: JobStatus) -> None:
        job_id, row, lease_no, worker = self._pick(data)
        failed = outcome != JobStatus.SUCCEEDED
        result = ResultIn(
            job_id=job_id,
            lease_no=lease_no,
            output=None if failed else "1",
            error={"type": "E", "message": "m", "traceback": ""} if failed else None,
            duration_seconds=0.1,
        )
        got = self._run(
            job_store.store_results,
            [Settlement(result=result, handler_id="h", worker_id=worker, status=outcome)],
            self.at + 1,
        )
        current = (row.status, row.lease_no, row.worker) == (JobStatus.LEASED, lease_no, worker) or _lazy(row, lease_no)
        assert got == ({job_id} if current else set())
        if current:
            row.attempts += 1
            row.status, row.lease_no, row.worker = outcome, lease_no, worker
            if outcome == JobStatus.AVAILABLE:
                row.history.append((row.attempts, lease_no, "errored"))
                row.lease_no += 1
            else:
                self.finals[job_id] = self.finals.get(job_id, 0) + 1

    @precondition(lambda self: self.rows)
    @rule(data=st.data(), charged=st.booleans(), final=st.booleans(), started=st.booleans())
    def requeue(self, data: st.DataObject, charged: bool, final: bool, started: bool) -> None:
        job_id, row, lease_no, worker = self._pick(data)
        final = final and charged
        got = self._run(
            job_store.requeue,
            [
                Requeue(
                    job_id=job_id,
                    lease_no=lease_no,
                    handler_id="h",
                    worker_id=worker,
                    charged=charged,
                    final=final,
                    error={"type": "WorkerLost"},
                    started=started or charged,
                )
            ],
            self.at + 1,
        )
        current = (row.status, row.lease_no) == (JobStatus.LEASED, lease_no) or _lazy(row, lease_no)
        assert got == ({job_id} if current else set())
        if current:
            if not final and (charged or started):
                row.history.append((row.attempts + 1, lease_no, "lost"))
            row.attempts += int(charged)
            row.lease_no, row.worker = lease_no, worker
            if final:
                row.status = JobStatus.ERRORED
                self.finals[job_id] = self.finals.get(job_id, 0) + 1
            else:
                row.status, row.lease_no = JobStatus.AVAILABLE, lease_no + 1

    @precondition(lambda self: self.rows)
    @rule(data=st.data())
    def classify(self, data: st.DataObject) -> None:
        job_id, row, lease_no, worker = self._pick(data)
        got = self._run(job_store.classify, worker, [(job_id, lease_no), (10**9, 1)])
        assert got[(10**9, 1)] == "unknown"
        done = row.status in (JobStatus.SUCCEEDED, JobStatus.ERRORED)
        same = done and row.lease_no == lease_no and row.worker == worker
        assert got[(job_id, lease_no)] == ("duplicate" if same else "stale")

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        rows = self._run(
            lambda c: c.execute(
                select(jobs.c.id, jobs.c.status, jobs.c.lease_no, jobs.c.worker_id, jobs.c.attempts)
            ).all()
        )
        for job_id, status, lease_no, worker, attempts in rows:
            model = self.rows[job_id]
            assert (status, lease_no, attempts) == (model.status, model.lease_no, model.attempts), job_id
            if status == JobStatus.LEASED:
                assert worker == model.worker
        assert all(n == 1 for n in self.finals.values())
        history = self._run(
            lambda c: c.execute(
                select(
                    job_attempts.c.job_id, job_attempts.c.attempt, job_attempts.c.lease_no, job_attempts.c.outcome
                ).order_by(job_attempts.c.id)
            ).all()
        )
        for job_id, model in self.rows.items():
            assert [tuple(h[1:]) for h in history if h[0] == job_id] == model.history, job_id


JobStoreMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestJobStoreFencing = JobStoreMachine.TestCase
