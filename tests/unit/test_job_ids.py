"""Job ids come from blocks committed in the store before use, and no id is ever handed out twice:
not by one server, nor by the next one on the same store (a job leased before its commit and lost
with its server keeps its id to itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from netdist.server.job_ids import JobIds
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import counters
from netdist.server.store.writer import GroupCommitWriter


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'netdist.db'}")
    yield engine
    engine.dispose()


def _reserved(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(counters.c.value).where(counters.c.name == "next_job_id")).scalar_one())


def test_ids_are_reserved_before_use_and_a_new_server_starts_past_every_block(engine: Engine) -> None:
    async def run() -> None:
        writer = GroupCommitWriter(engine)
        try:
            ids = JobIds(writer, block=4)
            first = await ids.take(3)
            assert first == [1, 2, 3]
            assert _reserved(engine) >= 4  # committed before they were handed out
            assert await ids.take(3) == [4, 5, 6]  # across two blocks
            big = await ids.take(10)  # more than a block at once
            assert big == sorted(big) and len(set(big)) == 10 and big[0] > 6
            used = set(first) | {4, 5, 6} | set(big)
            after = JobIds(writer, block=4)  # the next server on the same store
            again = await after.take(4)
            assert min(again) > max(used)
        finally:
            writer.close()

    asyncio.run(run())


def test_takers_at_once_get_different_ids(engine: Engine) -> None:
    async def run() -> list[list[int]]:
        writer = GroupCommitWriter(engine)
        try:
            ids = JobIds(writer, block=5)
            return list(await asyncio.gather(*(ids.take(n) for n in (3, 4, 2, 7, 1))))
        finally:
            writer.close()

    taken = asyncio.run(run())
    flat = [i for got in taken for i in got]
    assert [len(got) for got in taken] == [3, 4, 2, 7, 1]
    assert len(set(flat)) == len(flat)
