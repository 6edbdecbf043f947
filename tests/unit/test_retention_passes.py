"""Retention keeps up with a busy server: a pass that stops at its limit is followed by another soon.

Seen at 17,000 jobs/s with --keep-processed 10000 (bench/scale.py million): the store grew from 20 MB to
78 MB over a million jobs, because a pass deletes at most its budget of batches and the next came a whole
interval later. Checks that find nothing to delete do not use the budget up either (with a hundred
handlers they did, and the handlers after them were never reached).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from netdist.server.clock import SYSTEM_CLOCK
from netdist.server.retention import BATCH, BUSY_SECONDS, CATCH_UP_SECONDS, IN_FLIGHT, Pruner, Retention
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import default_url, open_engine
from netdist.server.store.facade import Store
from netdist.server.store.schema import jobs
from tests.store_rows import insert_handler

PROCESSED = 2 * BATCH + 200


def test_a_pass_cut_short_is_followed_soon_and_empty_checks_cost_nothing(tmp_path: Path) -> None:
    engine = open_engine(default_url(tmp_path))
    with engine.begin() as conn:
        for n in range(5):  # four handlers with nothing to delete come first
            insert_handler(conn, id=f"empty{n}", job_name=f"empty {n}")
        insert_handler(conn, id="z", job_name="busy")
        job_store.insert(conn, "z", job_store.reserve_job_ids(conn, PROCESSED), [("{}", "null")] * PROCESSED)
        conn.execute(jobs.update().values(status=JobStatus.PROCESSED, finished_at=1.0, output="1"))
    store = Store(engine)
    pruner = Pruner(store, Retention(keep_processed_count=0, interval_seconds=60.0), SYSTEM_CLOCK, max_batches=1)

    async def passes() -> list[tuple[int, float]]:
        return [(await pruner.run_once(), pruner.next_wait()) for _ in range(4)]

    try:
        seen = asyncio.run(passes())
    finally:
        store.writer.close()
    assert seen == [(BATCH, CATCH_UP_SECONDS), (BATCH, CATCH_UP_SECONDS), (200, 60.0), (0, 60.0)]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 0
    engine.dispose()


def test_a_pass_keeps_several_batches_on_their_way_to_the_writer(tmp_path: Path) -> None:
    """One batch at a time, each waited its turn behind the results in a busy writer and retention fell
    behind a server at 20,000 jobs/s (the store 54-70 MB against 35 over 600,000 jobs). IN_FLIGHT go at
    once; the writer runs them in order, so each still finds the next rows and the budget holds."""
    engine = open_engine(default_url(tmp_path))
    count = 7 * BATCH + 100
    with engine.begin() as conn:
        insert_handler(conn, id="z", job_name="busy")
        job_store.insert(conn, "z", job_store.reserve_job_ids(conn, count), [("{}", "null")] * count)
        conn.execute(jobs.update().values(status=JobStatus.PROCESSED, finished_at=1.0, output="1"))
    store = Store(engine)
    pruner = Pruner(store, Retention(keep_processed_count=0, interval_seconds=60.0), SYSTEM_CLOCK, max_batches=7)
    submit, waiting, most = store.writer.submit, set(), 0

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal most
        write = submit(*args, **kwargs)
        waiting.add(write)
        write.add_done_callback(waiting.discard)
        most = max(most, len(waiting))
        return write

    store.writer.submit = counted  # type: ignore[method-assign]
    try:
        deleted = [asyncio.run(pruner.run_once()), asyncio.run(pruner.run_once())]
    finally:
        store.writer.close()
    assert deleted == [7 * BATCH, 100]  # the budget of 7 batches holds, the rest in the next pass
    assert most == IN_FLIGHT
    engine.dispose()


def test_a_pass_that_deleted_a_batch_or_more_is_followed_within_a_second(tmp_path: Path) -> None:
    """A busy server finishing jobs as the passes go: each pass that deleted a batch or more, without reaching
    its limit, is followed within BUSY_SECONDS, so that each deletes about a second's worth. An interval's
    worth in one burst (a pass every 5 s at 33,000 jobs/s) took the writer from the results: the rate over
    100,000 jobs dipped to 26,000-29,000 between 33,000-36,000 (bench/scale.py million). A quiet store
    waits the whole interval."""
    engine = open_engine(default_url(tmp_path))
    with engine.begin() as conn:
        insert_handler(conn, id="z", job_name="busy")
    store = Store(engine)
    pruner = Pruner(store, Retention(keep_processed_count=0, interval_seconds=60.0), SYSTEM_CLOCK, max_batches=50)

    def finish(count: int) -> None:  # jobs the server finished since the last pass
        with engine.begin() as conn:
            job_store.insert(conn, "z", job_store.reserve_job_ids(conn, count), [("{}", "null")] * count)
            conn.execute(jobs.update().values(status=JobStatus.PROCESSED, finished_at=1.0, output="1"))

    async def passes() -> list[tuple[int, float]]:
        seen = []
        for count in (3 * BATCH, BATCH, BATCH - 1, 0):
            finish(count)
            seen.append((await pruner.run_once(), pruner.next_wait()))
        return seen

    try:
        seen = asyncio.run(passes())
    finally:
        store.writer.close()
    assert seen == [(3 * BATCH, BUSY_SECONDS), (BATCH, BUSY_SECONDS), (BATCH - 1, 60.0), (0, 60.0)]
    engine.dispose()
