"""The day's run time per worker, as a restarted server reads it back (``jobs.run_time_since``), is the
same before and after retention deleted jobs, on a real SQLite file and PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select, update

from netdist.server.states import JobStatus
from netdist.server.store import catalog, pruning
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import jobs, pruned_run_time
from tests.store_rows import insert_handler

TODAY = 1_000_000.0  # the day's start
YESTERDAY = TODAY - 86_400.0


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Handler h with 12 processed jobs: the first four finished yesterday, the others today; even ones
    ran on w1 for 0.25 s, odd ones on w2 for 0.5 s."""
    engine = open_engine(db_url)
    with engine.begin() as conn:
        insert_handler(conn)
        ids = job_store.reserve_job_ids(conn, 12)
        job_store.insert(conn, "h", ids, [("{}", "null")] * 12)
        for n, job_id in enumerate(ids):
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status=JobStatus.PROCESSED,
                    worker_id=("w1", "w2")[n % 2],
                    duration_seconds=(0.25, 0.5)[n % 2],
                    finished_at=(YESTERDAY if n < 4 else TODAY) + n,
                )
            )
    yield engine
    engine.dispose()


def run_time(engine: Engine, since: float = TODAY) -> dict[tuple[str, str], float]:
    with engine.connect() as conn:
        return job_store.run_time_since(conn, since)


def prune(engine: Engine, keep: int, day_start: float = TODAY) -> int:
    with engine.begin() as conn:
        upto = pruning.newest_past(conn, "h", JobStatus.PROCESSED, keep)
        assert upto is not None
        return pruning.delete_jobs(
            conn, "h", JobStatus.PROCESSED, finished_before=None, upto_id=upto, batch=2000, day_start=day_start
        )


def test_the_run_time_of_deleted_jobs_still_counts_for_the_day(engine: Engine) -> None:
    today = {("w1", "h"): 4 * 0.25, ("w2", "h"): 4 * 0.5}
    assert run_time(engine) == today
    assert prune(engine, keep=5) == 7  # four of yesterday's, three of today's
    assert run_time(engine) == today
    assert prune(engine, keep=0) == 5
    assert run_time(engine) == today
    assert run_time(engine, since=TODAY + 86_400.0) == {}  # tomorrow starts from nothing


def test_the_rows_of_earlier_days_go_and_a_removed_handler_takes_its_rows(engine: Engine) -> None:
    prune(engine, keep=8, day_start=YESTERDAY)  # a pass on the day before: kept for that day
    with engine.begin() as conn:
        days = set(conn.scalars(select(pruned_run_time.c.day_start)))
    assert days == {YESTERDAY}
    prune(engine, keep=0)
    with engine.begin() as conn:
        days = set(conn.scalars(select(pruned_run_time.c.day_start)))
        assert days == {TODAY}
        catalog.delete_handler(conn, "h")
        assert conn.scalar(select(func.count()).select_from(pruned_run_time)) == 0
