"""A job with a large input: its row stays small, so its lease and result do not write the input again.

SQLite writes a row anew whenever its size changes (a lease sets worker_id and leased_at, a result its
output), with everything the row holds. An input of INPUT_APART_CHARS or more is kept in ``job_inputs``;
every read of a job's input finds it there, and the job's deletion takes it along.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from netdist.server.lease_model import Lease, ResultIn, Settlement
from netdist.server.states import JobStatus
from netdist.server.store import catalog, job_history, pruning
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import for_writing, open_engine
from netdist.server.store.schema import job_inputs, jobs
from tests.store_rows import insert_handler

INPUT = json.dumps({"pad": "x" * 1_000_000})
OUTPUT = json.dumps({"out": "y" * 1_000})
SMALL = json.dumps({"n": 2})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "store.db"
    engine = open_engine(f"sqlite:///{path}")
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
    yield engine, path
    engine.dispose()


@pytest.fixture
def any_store(db_url: str) -> Iterator[Engine]:
    """A store on SQLite, and on PostgreSQL (where the reads' SQL differs in its placeholders)."""
    engine = open_engine(db_url)
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
    yield engine
    engine.dispose()


def write(engine: Engine, fn: Callable[[Connection], Any]) -> Any:
    with for_writing(engine.connect()) as conn, conn.begin():
        return fn(conn)


def wal_bytes_of(engine: Engine, path: Path, fn: Callable[[Connection], Any]) -> int:
    """How many bytes of WAL one committed write takes, from an emptied WAL."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy: done
    write(engine, fn)
    return Path(f"{path}-wal").stat().st_size


def lease_of(job_id: int) -> Lease:
    return Lease(
        job_id=job_id, lease_no=1, handler_id="h", worker_id="w-1", attempt=1, input=b"", leased_at=1.5, leased_mono=1.5
    )


def success(job_id: int) -> Settlement:
    return Settlement(ResultIn(job_id, 1, OUTPUT, None, 0.25), "h", "w-1", JobStatus.SUCCEEDED)


def run_to_processed(engine: Engine, job_id: int) -> None:
    """Lease the job, store its result, and mark it processed, as the server would."""
    write(engine, lambda conn: job_store.lease(conn, [lease_of(job_id)]))
    write(engine, lambda conn: job_store.store_results(conn, [success(job_id)], at=2.0))
    write(engine, lambda conn: job_store.mark_processed(conn, [job_id], JobStatus.PROCESSED))


def prune_processed(conn: Connection) -> int:
    """Retention's deletion of handler h's processed jobs, all of them."""
    return pruning.delete_jobs(conn, "h", JobStatus.PROCESSED, finished_before=None, upto_id=None, batch=10)


def test_a_large_input_is_written_once_and_its_lease_and_result_do_not_write_it_again(
    store: tuple[Engine, Path],
) -> None:
    engine, path = store
    inserted = wal_bytes_of(
        engine, path, lambda conn: job_store.insert(conn, "h", [1, 2], [(INPUT, "null"), (SMALL, "7")])
    )
    leased = wal_bytes_of(engine, path, lambda conn: job_store.lease(conn, [lease_of(1)]))
    stored = wal_bytes_of(engine, path, lambda conn: job_store.store_results(conn, [success(1)], at=2.0))
    assert len(INPUT) < inserted < 1.1 * len(INPUT)
    # Built with SECURE_DELETE (Debian's SQLite is), a lease wrote the row twice over: 2.02 MB of WAL here.
    assert leased < 50_000, f"a lease wrote {leased} bytes of WAL beside an input of {len(INPUT)}"
    assert stored < 50_000, f"a result of {len(OUTPUT)} bytes wrote {stored} bytes of WAL"
    with engine.connect() as conn:
        kept = dict(conn.execute(select(jobs.c.id, jobs.c.input)).all())
        apart = dict(conn.execute(select(job_inputs.c.job_id, job_inputs.c.input)).all())
    assert kept == {1: "", 2: SMALL} and apart == {1: INPUT}  # only the large one apart


def test_pruning_a_job_with_a_large_input_does_not_write_the_input_again_as_zeros(store: tuple[Engine, Path]) -> None:
    """Built with SECURE_DELETE (Debian's SQLite is), deleting a row overwrote its freed pages with zeros,
    which all went to the WAL: 1 MB for a pruned job's 1 MB input (the store sets secure_delete=FAST)."""
    engine, path = store
    write(engine, lambda conn: job_store.insert(conn, "h", [1], [(INPUT, "null")]))
    run_to_processed(engine, 1)
    deleted = wal_bytes_of(engine, path, prune_processed)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(job_inputs)).scalar_one() == 0
    assert deleted < 100_000, f"pruning the job wrote {deleted} bytes of WAL"


def test_every_read_of_a_jobs_input_finds_it_where_it_is_kept(any_store: Engine) -> None:
    engine = any_store
    write(engine, lambda conn: job_store.insert(conn, "h", [1, 2], [(INPUT, '"e1"'), (SMALL, '"e2"')]))
    ready = write(engine, lambda conn: job_store.load_available(conn, "h", 0, 10))
    assert [(r.job_id, r.input) for r in ready] == [(1, INPUT.encode()), (2, SMALL.encode())]
    write(engine, lambda conn: job_store.lease(conn, [lease_of(1), lease_of(2)]))
    with engine.connect() as conn:
        assert {r.id: r.input for r in job_store.leased(conn)} == {1: INPUT, 2: SMALL}
    settled = write(engine, lambda conn: job_store.store_settlements(conn, [success(1), success(2)], 2.0, {}))
    assert [(i.job_id, i.input_json, i.extra_json) for i in settled.succeeded["h"]] == [
        (1, INPUT, '"e1"'),
        (2, SMALL, '"e2"'),
    ]
    with engine.connect() as conn:
        waiting = job_store.unprocessed(conn, "h", JobStatus.SUCCEEDED, 10).rows
        listed = job_store.listing(conn, "h", JobStatus.SUCCEEDED, 10)
        shown = job_history.read_job(conn, 1, max_attempts=5)
    assert [(j.job_id, j.input_json, j.outcome_json) for j in waiting] == [(1, INPUT, OUTPUT), (2, SMALL, OUTPUT)]
    assert {r.id: r.input for r in listed} == {1: INPUT, 2: SMALL}
    assert shown is not None and shown.row.input == INPUT and shown.row.output == OUTPUT


def test_a_deleted_job_takes_its_input_along(any_store: Engine) -> None:
    engine = any_store
    write(engine, lambda conn: insert_handler(conn, id="g", job_name="other"))
    write(engine, lambda conn: job_store.insert(conn, "h", [1, 2], [(INPUT, "null"), (INPUT, "null")]))
    write(engine, lambda conn: job_store.insert(conn, "g", [3], [(INPUT, "null")]))
    run_to_processed(engine, 1)
    assert write(engine, prune_processed) == 1
    with engine.connect() as conn:
        assert sorted(conn.execute(select(job_inputs.c.job_id)).scalars()) == [2, 3]
    write(engine, lambda conn: catalog.delete_handler(conn, "h"))
    with engine.connect() as conn:
        assert sorted(conn.execute(select(job_inputs.c.job_id)).scalars()) == [3]  # the other handler's stays
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 1
