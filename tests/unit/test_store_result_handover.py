"""A stored result goes to its handler with the input and extra its lease carried, read back only when
the lease did not carry them (an extra too long to keep in memory, a lease adopted after a restart)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event

from netdist.server.lease_model import EXTRA_KEPT_CHARS, Lease, ResultIn, Settlement
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import for_writing, open_engine
from tests.store_rows import insert_handler

SHORT = '{"i": 1}'
LONG = '"' + "é" * EXTRA_KEPT_CHARS + '"'
INPUTS = {1: '{"n": 1}', 2: '{"n": 2, "pad": "' + "x" * 5000 + '"}'}  # the second kept in job_inputs


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
        job_store.insert(conn, "h", [1, 2], [(INPUTS[1], SHORT), (INPUTS[2], LONG)])
        leases = [
            Lease(job_id=i, lease_no=1, handler_id="h", worker_id="w", attempt=1, input=b"", leased_at=1, leased_mono=1)
            for i in (1, 2)
        ]
        job_store.lease(conn, leases)
    yield engine
    engine.dispose()


def test_a_refill_carries_a_short_extra_and_leaves_a_long_one_in_the_store(db_url: str) -> None:
    engine = open_engine(db_url)
    try:
        with for_writing(engine.connect()) as conn, conn.begin():
            insert_handler(conn)
            job_store.insert(conn, "h", [1, 2], [(INPUTS[1], SHORT), (INPUTS[2], LONG)])
            ready = job_store.load_available(conn, "h", 0, 10)
    finally:
        engine.dispose()
    assert [(r.job_id, r.input.decode(), r.extra) for r in ready] == [(1, INPUTS[1], SHORT), (2, INPUTS[2], None)]


def settle(engine: Engine, settlements: list[Settlement]) -> tuple[job_store.StoredSettlements, list[str]]:
    """Store the results; what the handler would get, and the statements that read jobs back by id."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "WHERE id IN" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with for_writing(engine.connect()) as conn, conn.begin():
            stored = job_store.store_settlements(conn, settlements, 2.0, {})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return stored, statements


def handed(stored: job_store.StoredSettlements) -> list[tuple[int, str, str, str]]:
    return [(r.job_id, r.input_json, r.output_json, r.extra_json) for r in stored.succeeded["h"]]


def success(job_id: int, *carried: Any) -> Settlement:
    return Settlement(ResultIn(job_id, 1, f'{{"out": {job_id}}}', None, 0.5), "h", "w", JobStatus.SUCCEEDED, *carried)


def test_a_result_whose_lease_carried_input_and_extra_is_handed_over_without_reading_the_job(
    engine: Engine,
) -> None:
    stored, reads = settle(engine, [success(1, INPUTS[1].encode(), SHORT)])
    assert stored.stored == {1}
    assert handed(stored) == [(1, INPUTS[1], '{"out": 1}', SHORT)]
    assert reads == []


def test_a_result_whose_lease_did_not_carry_them_reads_the_job_back(engine: Engine) -> None:
    stored, reads = settle(engine, [success(1, INPUTS[1].encode(), SHORT), success(2, INPUTS[2].encode(), None)])
    assert stored.stored == {1, 2}
    assert handed(stored) == [(1, INPUTS[1], '{"out": 1}', SHORT), (2, INPUTS[2], '{"out": 2}', LONG)]
    assert len(reads) == 1  # job 2 only


def test_a_lease_adopted_after_a_restart_reads_its_job_back(engine: Engine) -> None:
    stored, reads = settle(engine, [success(1), success(2)])
    assert handed(stored) == [(1, INPUTS[1], '{"out": 1}', SHORT), (2, INPUTS[2], '{"out": 2}', LONG)]
    assert len(reads) == 1
