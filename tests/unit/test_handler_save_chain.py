"""A handler's saves go to the store without waiting for each other's commit (runtime.SAVES_IN_FLIGHT):
once one fails, none after it may commit, since each is built on what the calls before it did. Through
the real group-commit writer, on a real SQLite file and PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from netdist.errors import ResultsNotStoredError
from netdist.server.runtime import _record_call, _SaveChain
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import handlers, jobs
from netdist.server.store.writer import GroupCommitWriter
from tests.store_rows import insert_handler


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        insert_handler(conn)
        job_store.insert(conn, "h", [1, 2, 3], [("{}", "null")] * 3)
        conn.execute(jobs.update().where(jobs.c.id <= 2).values(status=JobStatus.SUCCEEDED, output="1"))
    yield engine
    engine.dispose()


def save(writer: GroupCommitWriter, chain: _SaveChain, processed: list[int], state: str) -> asyncio.Future[Any]:
    return writer.submit(
        _record_call,
        chain,
        "h",
        processed=processed,
        processed_status=JobStatus.PROCESSED,
        invalid=[],
        new_jobs=[],
        new_ids=[],
        handler_state=state,
        summary="",
        total=None,
        handed=JobStatus.SUCCEEDED,
        on_error=chain.fail,
    )


def test_saves_after_one_that_failed_do_not_commit(engine: Engine) -> None:
    writer = GroupCommitWriter(engine, database="test")
    chain = _SaveChain()

    async def main() -> Any:
        first = save(writer, chain, [1], '{"call": 1}')
        refused = save(writer, chain, [3], '{"call": 2}')  # job 3's result was never stored
        later = save(writer, chain, [2], '{"call": 3}')  # fine on its own, but built on call 2
        return await asyncio.gather(first, refused, later, return_exceptions=True)

    try:
        first, refused, later = asyncio.run(main())
    finally:
        writer.close()
    assert first == []
    assert isinstance(refused, ResultsNotStoredError)
    assert isinstance(later, RuntimeError) and "a call before this one was not" in str(later)
    with engine.connect() as conn:
        state = conn.execute(select(handlers.c.handler_state_json)).scalar_one()
        status = dict(conn.execute(select(jobs.c.id, jobs.c.status)).all())
    assert state == '{"call": 1}'
    assert status == {1: JobStatus.PROCESSED, 2: JobStatus.SUCCEEDED, 3: JobStatus.AVAILABLE}
