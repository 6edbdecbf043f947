"""Attempt history in the store, on SQLite and PostgreSQL: written with the write that ends an attempt,
fenced like it, and read back whole; retention's deletes keep the handler's tallies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from netdist.server.lease_model import Lease, Requeue, ResultIn, Settlement
from netdist.server.states import JobStatus
from netdist.server.store import job_history, pruning
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import handlers, job_attempts, jobs, workers
from tests.store_rows import insert_handler


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        insert_handler(conn, job_name="monte carlo", script_filename="montecarlo.py")
        conn.execute(workers.insert().values(id="w1", name="lab-1"))
        job_store.insert(conn, "h", job_store.reserve_job_ids(conn, 2), [('{"i": 0}', "null"), ('{"i": 1}', "null")])
    yield engine
    engine.dispose()


def _lease(engine: Engine, job_id: int, lease_no: int, at: float) -> None:
    lease = Lease(
        job_id=job_id,
        lease_no=lease_no,
        handler_id="h",
        worker_id="w1",
        attempt=1,
        input=b"{}",
        leased_at=at,
        leased_mono=0.0,
    )
    with engine.begin() as conn:
        assert job_store.lease(conn, [lease]) == {job_id}


def _result(
    engine: Engine, job_id: int, lease_no: int, status: JobStatus, at: float, *, worker: str = "w1"
) -> set[int]:
    error = None if status == JobStatus.SUCCEEDED else {"type": "ValueError", "message": "boom", "traceback": "tb"}
    result = ResultIn(job_id, lease_no, None if error else '{"ok": 1}', error, 0.25)
    with engine.begin() as conn:
        return job_store.store_results(conn, [Settlement(result, "h", worker, status)], at)


def test_attempts_that_did_not_end_the_job_are_kept_in_order_and_fenced(engine: Engine) -> None:
    job_id = 1
    _lease(engine, job_id, 1, 10.0)
    assert _result(engine, job_id, 1, JobStatus.AVAILABLE, 11.0, worker="w2") == set()  # not its holder
    assert _result(engine, job_id, 1, JobStatus.AVAILABLE, 12.0) == {job_id}  # an error, retried
    assert _result(engine, job_id, 1, JobStatus.AVAILABLE, 12.5) == set()  # the same again: nothing new
    _lease(engine, job_id, 3, 13.0)  # a retry takes a new lease number
    timeout = Requeue(
        job_id=job_id,
        lease_no=3,
        handler_id="h",
        worker_id="w1",
        charged=True,
        final=False,
        error={"type": "JobTimeout", "message": "late"},
        started=True,
    )
    with engine.begin() as conn:
        assert job_store.requeue(conn, [timeout], 14.0) == {job_id}
        assert job_store.requeue(conn, [timeout], 14.5) == set()
    _lease(engine, job_id, 5, 15.0)
    assert _result(engine, job_id, 5, JobStatus.SUCCEEDED, 16.0) == {job_id}
    _lease(engine, 2, 1, 15.0)
    assert _result(engine, 2, 1, JobStatus.SUCCEEDED, 16.0) == {2}  # at once: no history row

    with engine.connect() as conn:
        record = job_history.read_job(conn, job_id, max_attempts=10)
        assert conn.execute(select(func.count()).select_from(job_attempts)).scalar_one() == 2
        assert job_history.read_job(conn, 999, max_attempts=10) is None
    assert record is not None
    assert (record.job_name, record.script_name, record.not_shown) == ("monte carlo", "montecarlo.py", 0)
    assert record.worker_names == {"w1": "lab-1"}
    assert [(a.attempt, a.lease_no, a.outcome, a.charged, a.error_type) for a in record.earlier] == [
        (1, 1, "errored", True, "ValueError"),
        (2, 3, "lost", True, "JobTimeout"),
    ]
    first, second = record.earlier
    assert (first.started_at, first.finished_at, first.duration_seconds, first.error_traceback) == (
        10.0,
        12.0,
        0.25,
        "tb",
    )
    assert (second.started_at, second.finished_at, second.duration_seconds) == (13.0, 14.0, None)
    assert (record.row.status, record.row.attempts, record.row.leased_at, record.row.worker_id) == (
        JobStatus.SUCCEEDED,
        3,
        15.0,
        "w1",
    )


def test_retention_deletes_in_batches_and_keeps_the_tally(engine: Engine) -> None:
    with engine.begin() as conn:
        job_store.insert(conn, "h", job_store.reserve_job_ids(conn, 8), [("{}", "null")] * 8)
        conn.execute(jobs.update().values(status=JobStatus.PROCESSED, finished_at=5.0, output="1"))
    processed = JobStatus.PROCESSED
    with engine.begin() as conn:  # ten processed: past the newest two are 1..8
        upto = pruning.newest_past(conn, "h", processed, 2)
        assert upto == 8
        assert pruning.delete_jobs(conn, "h", processed, finished_before=None, upto_id=upto, batch=3) == 3
    with engine.begin() as conn:
        assert pruning.delete_jobs(conn, "h", processed, finished_before=None, upto_id=upto, batch=100) == 5
        assert pruning.newest_past(conn, "h", processed, 2) is None  # two are left
        upto = pruning.newest_past(conn, "h", processed, 1)
        assert pruning.delete_jobs(conn, "h", processed, finished_before=None, upto_id=upto, batch=100) == 1
        assert pruning.drop_outputs(conn, "h", after_id=0, finished_before=6.0, batch=10) == 10
        assert pruning.drop_outputs(conn, "h", after_id=10, finished_before=6.0, batch=10) == 10
    with engine.connect() as conn:
        left = conn.execute(select(jobs.c.id, jobs.c.output)).all()
        tally = conn.execute(select(handlers.c.pruned_processed)).scalar_one()
    assert [(i, o) for i, o in left] == [(10, None)] and tally == 9
    with engine.begin() as conn:  # the newest row may go too: job ids come from a counter
        upto = pruning.newest_past(conn, "h", processed, 0)
        assert pruning.delete_jobs(conn, "h", processed, finished_before=None, upto_id=upto, batch=100) == 1
        job_store.insert(conn, "h", job_store.reserve_job_ids(conn, 1), [("{}", "null")])
        assert conn.execute(select(jobs.c.id)).scalar_one() == 11


def test_a_tally_reads_a_handlers_counts_and_what_retention_deleted_together(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(handlers.update().values(pruned_processed=5, pruned_failed=2))
        insert_handler(conn, id="empty", job_name="nothing yet")
    with engine.connect() as conn:
        assert job_store.tally(conn, "h") == ({"available": 2}, (5, 2))
        assert job_store.tally(conn, "empty") == ({}, (0, 0))
        assert job_store.counts(conn, ["h", "empty"]) == {"h": {"available": 2}}
        assert job_store.counts(conn, []) == {}
