"""The per-job writes (insert, lease, result) as a few statements of many rows on SQLite, each row
still its own compare-and-set; the same rows as the driver's executemany writes them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from netdist.server.lease_model import Lease, ResultIn, Settlement
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store import rows_at_once
from netdist.server.store.engine import for_writing, open_engine
from netdist.server.store.schema import jobs
from tests.store_rows import insert_handler

COUNT = 300  # two statements on SQLite: 256 rows, then 44 padded to 64


def lease(job_id: int, lease_no: int = 1, worker_id: str = "w") -> Lease:
    return Lease(
        job_id=job_id,
        lease_no=lease_no,
        handler_id="h",
        worker_id=worker_id,
        attempt=1,
        input=b"",
        leased_at=2.5,
        leased_mono=1.0,
    )


def result(job_id: int, lease_no: int = 1, worker_id: str = "w") -> Settlement:
    return Settlement(
        ResultIn(job_id, lease_no, f'{{"out": {job_id}}}', None, 0.25),
        "h",
        worker_id,
        JobStatus.SUCCEEDED,
        leased_at=2.5,
    )


def write_all(engine: Engine) -> tuple[set[int], set[int]]:
    """Insert COUNT jobs, lease them (every seventh at a lease number not above the stored one, which must
    not take), then store a result for each (every fifth from another worker, which must not count). The
    seventh ones stay available at lease number 0, as a lease held lazily finds them: a result at lease
    number 1 counts, from whichever worker (the lease table fences the worker), one at 0 (every
    fourteenth) does not."""
    ids = list(range(1, COUNT + 1))
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
        job_store.insert(conn, "h", ids, [(f'{{"i": {i}, "s": "é\\u0000"}}', "null") for i in ids])
        leased = job_store.lease(conn, [lease(i, 0 if i % 7 == 0 else 1) for i in ids])
        results = [result(i, 0 if i % 14 == 0 else 1, "x" if i % 5 == 0 else "w") for i in ids]
        stored = job_store.store_results(conn, results, 9.5)
    return leased, stored


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(jobs).order_by(jobs.c.id)).all())


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


def test_each_row_is_its_own_compare_and_set(engine: Engine) -> None:
    leased, stored = write_all(engine)

    ids = set(range(1, COUNT + 1))
    assert leased == {i for i in ids if i % 7}
    assert stored == {i for i in leased if i % 5} | {i for i in ids if i % 7 == 0 and i % 14}
    got = {r.id: r for r in rows(engine)}
    assert sorted(got) == sorted(ids)
    for i, r in got.items():
        assert r.input == f'{{"i": {i}, "s": "é\\u0000"}}'
        if i in stored:
            assert (r.status, r.lease_no, r.worker_id, r.output, r.attempts) == (
                "succeeded",
                1,
                "x" if i % 5 == 0 else "w",
                f'{{"out": {i}}}',
                1,
            )
            assert (r.leased_at, r.finished_at, r.duration_seconds) == (2.5, 9.5, 0.25)
        elif i in leased:
            assert (r.status, r.lease_no, r.output, r.attempts) == ("leased", 1, None, 0)
        else:
            assert (r.status, r.lease_no, r.worker_id) == ("available", 0, None)


def test_sqlite_writes_many_rows_per_statement_as_executemany_would(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[tuple[str, bool]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().startswith(("INSERT INTO jobs", "UPDATE jobs")):
            statements.append((statement, executemany))

    at_once = open_engine(f"sqlite:///{tmp_path / 'at-once.db'}")
    event.listen(at_once, "before_cursor_execute", seen)
    try:
        written_at_once = write_all(at_once)
        rows_at_once_ = rows(at_once)
    finally:
        at_once.dispose()
    # Per write, a statement of 256 rows and one of 64 (44 and 20 of NULLs): never one per row.
    assert len(statements) == 6
    assert not any(executemany for _, executemany in statements)

    monkeypatch.setattr(rows_at_once, "UPDATE_FROM_SQLITE", (99, 0, 0))  # as on an SQLite before 3.33
    each = open_engine(f"sqlite:///{tmp_path / 'each.db'}")
    try:
        assert write_all(each) == written_at_once
        assert rows(each) == rows_at_once_
    finally:
        each.dispose()


def test_a_row_of_the_wrong_width_is_refused() -> None:
    form = rows_at_once.RowsSql("INSERT INTO t (a, b) VALUES (?, ?)", "INSERT INTO t (a, b) VALUES {}", 2)
    engine = open_engine("sqlite://")
    try:
        with engine.connect() as conn, pytest.raises(ValueError, match="rows of 2 values"):
            rows_at_once.rows_at_once(conn, form, [(1, 2), (3,)])
    finally:
        engine.dispose()


NO_FILE_LEFT = """
import os, resource, sys
from netdist.server.lease_model import ResultIn, Settlement
from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import for_writing, open_engine
from tests.store_rows import insert_handler

engine = open_engine("sqlite:///" + sys.argv[1])
ids = list(range(1, 301))
with for_writing(engine.connect()) as conn, conn.begin():
    insert_handler(conn)
    job_store.insert(conn, "h", ids, [('{"pad": "%s"}' % ("x" * 2000), "null") for _ in ids])
results = [Settlement(ResultIn(i, 1, "1", None, 0.1), "h", "w", JobStatus.SUCCEEDED, leased_at=2.5) for i in ids]
with for_writing(engine.connect()) as conn, conn.begin():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    stored = job_store.store_results(conn, results, 9.5)  # SQLITE_CANTOPEN if it needs a temp file
    for fd in held:
        os.close(fd)
print(len(stored))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_a_many_row_write_on_sqlite_opens_no_temp_file(tmp_path: Path) -> None:
    """A statement that changes many rows journals the pages it changes, and SQLite spilled that journal past
    64 KiB to a file in /var/tmp: made, written a page at a time and deleted at each of the writer's many-row
    writes, with job data in it. The store keeps it in memory (temp_store=MEMORY): the 256-row result write
    here (about 150 pages) succeeds with no file descriptor left to open."""
    out = subprocess.run(
        [sys.executable, "-c", NO_FILE_LEFT, str(tmp_path / "store.db")],
        cwd=Path(__file__).parents[2],  # where ``tests`` imports from
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # its stderr says why, below
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "300"
