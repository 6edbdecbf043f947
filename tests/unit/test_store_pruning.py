"""``pruning.delete_jobs`` on a real SQLite file and PostgreSQL database: the statements name a batch by
its range of ids (all its jobs go) or by its ids (some finished too recently), and either way exactly the
oldest jobs of one handler in one status go, with their attempts, long inputs and log lines, and the tally
grows by as many. The other handler's jobs lie between them, in the same range, and keep every row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, insert, select, update

from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store import pruning
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import handlers, job_attempts, job_inputs, job_log, jobs
from tests.store_rows import insert_handler

PER_HANDLER = 30


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Handlers a and b with PER_HANDLER jobs each, interleaved by id; every third of a's failed, the
    rest processed, finished at their id; each job with an attempt row, a long input row and a log line."""
    engine = open_engine(db_url)
    with engine.begin() as conn:
        for hid in ("a", "b"):
            insert_handler(conn, id=hid, job_name=hid)
        ids = job_store.reserve_job_ids(conn, 2 * PER_HANDLER)
        for n, job_id in enumerate(ids):
            job_store.insert(conn, "ab"[n % 2], [job_id], [("{}", "null")])
        conn.execute(update(jobs).values(status=JobStatus.PROCESSED, finished_at=jobs.c.id))
        conn.execute(update(jobs).where(jobs.c.id.in_(ids[::2][::3])).values(status=JobStatus.FAILED))
        for n, job_id in enumerate(ids):
            hid = "ab"[n % 2]
            conn.execute(insert(job_inputs).values(job_id=job_id, input="{}"))
            conn.execute(insert(job_attempts).values(
                job_id=job_id, handler_id=hid, lease_no=1, attempt=1, charged=True, outcome="lost",
                finished_at=1.0, error_type="", error_message="", error_traceback="",
            ))  # fmt: skip
            conn.execute(insert(job_log).values(
                job_id=job_id, handler_id=hid, lease_no=1, attempt=1, at=1.0, level="INFO", text="x"
            ))  # fmt: skip
    yield engine
    engine.dispose()


def left(engine: Engine) -> tuple[list[int], int, int, int]:
    """a's processed job ids left, a's failed left, the jobs whose attempt, input and log rows are all
    left (-1 when some job has some of them but not all), a's pruned tally."""
    with engine.connect() as conn:
        processed = conn.scalars(
            select(jobs.c.id).where(jobs.c.handler_id == "a", jobs.c.status == JobStatus.PROCESSED).order_by(jobs.c.id)
        ).all()
        failed = conn.scalar(select(func.count()).where(jobs.c.handler_id == "a", jobs.c.status == JobStatus.FAILED))
        with_rows = [set(conn.scalars(select(t.c.job_id))) for t in (job_attempts, job_inputs, job_log)]
        left_jobs = set(conn.scalars(select(jobs.c.id)))
        rows = len(left_jobs) if all(r == left_jobs for r in with_rows) else -1
        tally = conn.scalar(select(handlers.c.pruned_processed).where(handlers.c.id == "a"))
    return list(processed), int(failed or 0), int(rows or 0), int(tally or 0)


def a_processed(engine: Engine) -> list[int]:
    return left(engine)[0]


@pytest.mark.parametrize("finished_before", [None, 1e12], ids=["by count", "by age, all old enough"])
def test_the_oldest_batch_goes_with_its_rows_and_nothing_else(engine: Engine, finished_before: float | None) -> None:
    before = a_processed(engine)
    upto = before[-3]  # the newest two stay whatever the batch
    with engine.begin() as conn:
        gone = pruning.delete_jobs(
            conn, "a", JobStatus.PROCESSED, finished_before=finished_before, upto_id=upto, batch=7
        )
    processed, failed, rows, tally = left(engine)
    assert gone == 7 and processed == before[7:] and tally == 7
    assert failed == 10 and rows == 2 * PER_HANDLER - 7  # a's failed ones and b's rows stay
    with engine.connect() as conn:  # b untouched
        assert conn.scalar(select(func.count()).where(jobs.c.handler_id == "b")) == PER_HANDLER
    with engine.begin() as conn:
        gone = pruning.delete_jobs(
            conn, "a", JobStatus.PROCESSED, finished_before=finished_before, upto_id=upto, batch=100
        )
    assert gone == len(before) - 9 and a_processed(engine) == before[-2:]


def test_by_age_only_those_finished_before_go(engine: Engine) -> None:
    before = a_processed(engine)
    with engine.begin() as conn:
        gone = pruning.delete_jobs(conn, "a", JobStatus.PROCESSED, finished_before=before[4], upto_id=None, batch=7)
    assert gone == 4 and a_processed(engine) == before[4:] and left(engine)[2] == 2 * PER_HANDLER - 4
    with engine.begin() as conn:  # none old enough: nothing changes, the tally neither
        gone = pruning.delete_jobs(conn, "a", JobStatus.PROCESSED, finished_before=0.0, upto_id=None, batch=7)
    assert gone == 0 and left(engine)[3] == 4
