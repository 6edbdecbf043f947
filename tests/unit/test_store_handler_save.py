"""``jobs.record_batch``, the write that ends every handler host call, on a real SQLite file and
PostgreSQL database: its statements go to the driver (an IN list in chunks), not through
SQLAlchemy's expression layer, so each driver's placeholders and the chunk edges are checked here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from netdist.errors import ResultsNotStoredError
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import handlers, jobs
from tests.store_rows import insert_handler

SUCCEEDED = 1201  # more than two IN lists of 500


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        insert_handler(conn)
        job_store.insert(conn, "h", range(1, SUCCEEDED + 2), [("{}", "null")] * (SUCCEEDED + 1))
        conn.execute(jobs.update().where(jobs.c.id <= SUCCEEDED).values(status=JobStatus.SUCCEEDED, output="1"))
    yield engine
    engine.dispose()


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
    return {status: n for status, n in rows}


def test_a_save_marks_every_processed_result_and_the_invalid_ones_failed(engine: Engine) -> None:
    invalid = [7, 500, 501, 1000]
    with engine.begin() as conn:
        job_store.record_batch(
            conn,
            "h",
            processed=list(range(1, SUCCEEDED + 1)),
            processed_status=JobStatus.PROCESSED,
            invalid=invalid,
            new_jobs=[],
            new_ids=[],
            handler_state='{"n": 1}',
            summary="s" * 3000,
            total=42,
        )
    assert statuses(engine) == {
        JobStatus.PROCESSED: SUCCEEDED - len(invalid),
        JobStatus.FAILED: len(invalid),
        JobStatus.AVAILABLE: 1,  # not among the processed: untouched
    }
    with engine.connect() as conn:
        saved = conn.execute(select(handlers.c.handler_state_json, handlers.c.summary, handlers.c.total)).one()
    assert (saved.handler_state_json, len(saved.summary), saved.total) == ('{"n": 1}', 2000, 42)


def test_a_save_that_processed_nothing_changes_no_job(engine: Engine) -> None:
    with engine.begin() as conn:
        job_store.mark_processed(conn, [], JobStatus.PROCESSED)
    assert statuses(engine) == {JobStatus.SUCCEEDED: SUCCEEDED, JobStatus.AVAILABLE: 1}


def test_a_save_of_results_handed_as_succeeded_refuses_any_that_are_not(engine: Engine) -> None:
    """The handler had them before their write committed; that write failed, so its work with them
    must not count: nothing of the save is written (its transaction rolls back)."""
    refused = pytest.raises(ResultsNotStoredError, match=r"not stored: 1 of 3 are not succeeded in the store")
    with refused, engine.begin() as conn:
        job_store.record_batch(
            conn,
            "h",
            processed=[1, 2, SUCCEEDED + 1],  # the last one is still available: its result was not stored
            processed_status=JobStatus.PROCESSED,
            invalid=[],
            new_jobs=[("{}", "null")],
            new_ids=[SUCCEEDED + 2],
            handler_state='{"n": 2}',
            summary="",
            total=None,
            handed=JobStatus.SUCCEEDED,
        )
    assert statuses(engine) == {JobStatus.SUCCEEDED: SUCCEEDED, JobStatus.AVAILABLE: 1}


def test_a_save_of_results_handed_as_succeeded_marks_them_when_they_are(engine: Engine) -> None:
    with engine.begin() as conn:
        job_store.record_batch(
            conn,
            "h",
            processed=[1, 2, 3],
            processed_status=JobStatus.PROCESSED,
            invalid=[3],
            new_jobs=[],
            new_ids=[],
            handler_state="{}",
            summary="",
            total=None,
            handed=JobStatus.SUCCEEDED,
        )
    assert statuses(engine) == {
        JobStatus.PROCESSED: 2,
        JobStatus.FAILED: 1,
        JobStatus.SUCCEEDED: SUCCEEDED - 3,
        JobStatus.AVAILABLE: 1,
    }


def test_a_save_fails_as_invalid_only_results_it_processed_of_its_own_handler(engine: Engine) -> None:
    """A second guard behind the host's check (host.py): ids named invalid that the call was not
    handed, or that are another handler's, are left as they are."""
    with engine.begin() as conn:
        insert_handler(conn, id="other", job_name="other")
        job_store.insert(conn, "other", [SUCCEEDED + 10], [("{}", "null")])
        conn.execute(jobs.update().where(jobs.c.id == SUCCEEDED + 10).values(status=JobStatus.SUCCEEDED))
        job_store.record_batch(
            conn,
            "h",
            processed=[1, 2, SUCCEEDED + 10],  # another handler's job, as a buggy runtime might name it
            processed_status=JobStatus.PROCESSED,
            invalid=[2, 3, SUCCEEDED + 10],  # 3 was not handed to this call
            new_jobs=[],
            new_ids=[],
            handler_state="{}",
            summary="",
            total=None,
        )
    with engine.connect() as conn:
        rows = dict(
            conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_([1, 2, 3, SUCCEEDED + 10]))).all()
        )
    assert rows == {
        1: JobStatus.PROCESSED,
        2: JobStatus.FAILED,
        3: JobStatus.SUCCEEDED,
        SUCCEEDED + 10: JobStatus.SUCCEEDED,
    }
