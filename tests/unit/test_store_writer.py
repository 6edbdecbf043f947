"""The group-commit writer through outages, against a real SQLite file.

A full disk is SQLite's own SQLITE_FULL, made by capping the file's pages
(``PRAGMA max_page_count``) on each new connection; an unavailable database is
a real lock held by another connection (SQLITE_BUSY).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from netdist.errors import DiskFullError, StoreUnavailableError
from netdist.server.store.engine import open_engine
from netdist.server.store.facade import Store
from netdist.server.store.outage import StoreHealth
from netdist.server.store.writer import GroupCommitWriter

UNLIMITED = 1_073_741_823


class Disk:
    """A cap on the database's pages, applied to every new connection."""

    def __init__(self, engine: Engine) -> None:
        self.max_pages = UNLIMITED

        @event.listens_for(engine, "connect")
        def _cap(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA max_page_count = {self.max_pages}")

    def fill(self, engine: Engine) -> None:
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]  # no free pages left inside either
            self.max_pages = int(raw.driver_connection.execute("PRAGMA page_count").fetchone()[0])  # type: ignore[union-attr]
        finally:
            raw.close()
        engine.dispose()  # pooled connections keep the cap they were opened with

    def free(self) -> None:
        self.max_pages = UNLIMITED


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'netdist.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE rows (id INTEGER PRIMARY KEY, tag TEXT, pad TEXT)")
    yield engine
    engine.dispose()


class Transitions:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, before: StoreHealth, after: StoreHealth) -> None:
        self.seen.append((before.state, after.state))


def make_writer(engine: Engine, transitions: Transitions) -> GroupCommitWriter:
    return GroupCommitWriter(
        engine, database="the test database", on_change=transitions, first_delay_seconds=0.01, max_delay_seconds=0.05
    )


def insert(conn: Connection, tag: str) -> int:
    conn.execute(text("INSERT INTO rows (tag, pad) VALUES (:tag, :pad)"), {"tag": tag, "pad": "x" * 5000})
    return int(conn.execute(text("SELECT count(*) FROM rows WHERE tag = :tag"), {"tag": tag}).scalar_one())


def tags(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT tag FROM rows ORDER BY id"))]


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {predicate}")
        await asyncio.sleep(0.01)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_a_full_disk_holds_the_work_and_commits_it_once_when_space_is_back(engine: Engine) -> None:
    disk, transitions = Disk(engine), Transitions()
    writer = make_writer(engine, transitions)

    async def main() -> None:
        disk.fill(engine)
        waiting = [asyncio.ensure_future(writer.run(insert, f"w{i}")) for i in range(3)]
        await eventually(lambda: writer.health.state == "full")
        await eventually(lambda: writer.retries >= 3)  # tried again, and again
        assert not any(w.done() for w in waiting)
        assert "database or disk is full" in writer.health.outage.reason  # type: ignore[union-attr]

        # An operator's write is refused at once, naming the database.
        with pytest.raises(DiskFullError, match=r"^the disk holding the database \(the test database\) is full: "):
            await writer.run_or_fail(insert, "operator")

        disk.free()
        assert [await w for w in waiting] == [1, 1, 1]
        assert writer.health.healthy

    try:
        run(main)
    finally:
        writer.close()
    assert sorted(tags(engine)) == ["w0", "w1", "w2"]  # each once, the operator's write never
    assert transitions.seen == [("ok", "full"), ("full", "ok")]  # one per transition, none per retry


def test_an_operators_write_caught_in_an_outage_fails_and_is_not_applied_later(engine: Engine) -> None:
    disk, transitions = Disk(engine), Transitions()
    writer = make_writer(engine, transitions)

    async def main() -> None:
        disk.fill(engine)
        # Both are queued before the writer knows: the same batch meets the full disk.
        fast = asyncio.ensure_future(writer.run_or_fail(insert, "operator"))
        slow = asyncio.ensure_future(writer.run(insert, "server"))
        with pytest.raises(DiskFullError):
            await fast
        assert not slow.done()
        disk.free()
        assert await slow == 1

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == ["server"]


def test_a_locked_database_is_unavailable_and_work_resumes_when_the_lock_goes(engine: Engine, tmp_path: Path) -> None:
    @event.listens_for(engine, "connect")
    def _impatient(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 20")

    engine.dispose()  # no pooled connection with the usual 30 s patience

    transitions = Transitions()
    store = Store(engine, database="the test database", on_health_change=transitions)
    store.writer._first_delay, store.writer._max_delay = 0.01, 0.05
    blocker = sqlite3.connect(tmp_path / "netdist.db", isolation_level=None)

    async def main() -> None:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        pending = asyncio.ensure_future(store.writer.run(insert, "server"))
        await eventually(lambda: store.health.state == "unavailable")
        with pytest.raises(StoreUnavailableError) as refused:
            await store.write(insert, "operator")
        assert refused.value.message == (
            "the store is unavailable (database is locked); the server retries and resumes by itself"
        )
        assert await store.read(lambda conn: tags(engine)) == []  # reads still work (WAL)
        blocker.execute("ROLLBACK")
        assert await pending == 1

    try:
        run(main)
    finally:
        blocker.close()
        store.writer.close()
    assert tags(engine) == ["server"]
    assert transitions.seen == [("ok", "unavailable"), ("unavailable", "ok")]


def test_a_read_on_a_connection_the_writer_used_does_not_wait_for_the_write_lock(
    engine: Engine, tmp_path: Path
) -> None:
    # Seen from outside: with one handler running at full speed, starting another took 0.1-4.8 s and
    # `handlers list` up to 0.8 s. A pooled connection kept the writer's mark, so a read that got it
    # began BEGIN IMMEDIATE and queued for the write lock behind the job traffic.
    @event.listens_for(engine, "connect")
    def _impatient(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 20")

    engine.dispose()
    store = Store(engine, database="the test database")
    blocker = sqlite3.connect(tmp_path / "netdist.db", isolation_level=None)

    def read_tags(conn: Connection) -> list[str]:
        return [r[0] for r in conn.execute(text("SELECT tag FROM rows ORDER BY id"))]

    async def main() -> None:
        for n in range(3):
            await store.write(insert, f"t{n}")  # the writer keeps its connection; reads get others
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            for _ in range(3):
                assert await store.read(read_tags) == ["t0", "t1", "t2"]
        finally:
            blocker.execute("ROLLBACK")
        assert await store.write(insert, "after") == 1  # the lock gone, the writer goes on

    try:
        run(main)
    finally:
        blocker.close()
        store.writer.close()


def test_the_writer_keeps_one_connection_and_takes_a_new_one_after_a_failed_batch(engine: Engine) -> None:
    # Checking a connection out of the pool and back for every batch cost the writer about 17 µs
    # and, under load, waits for the GIL: one job's round trip was 0.06 ms longer with it.
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda dbapi_conn, _record, _proxy: checkouts.append(id(dbapi_conn)))
    writer = make_writer(engine, Transitions())

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def main() -> None:
        for n in range(5):
            assert await writer.run(insert, f"a{n}") == 1
        assert len(checkouts) == 1
        with pytest.raises(Exception, match="no such table"):
            await writer.run(broken)
        assert await writer.run(insert, "after") == 1
        assert len(checkouts) == 2  # the failed batch's connection was dropped, not used again

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == [f"a{n}" for n in range(5)] + ["after"]


def test_an_operations_own_error_fails_only_that_operation_at_once(engine: Engine) -> None:
    transitions = Transitions()
    writer = make_writer(engine, transitions)

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def main() -> None:
        results = await asyncio.gather(
            writer.run(insert, "a"), writer.run(broken), writer.run(insert, "b"), return_exceptions=True
        )
        assert results[0] == 1 and results[2] == 1
        assert "no such table" in str(results[1])

    try:
        run(main)
    finally:
        writer.close()
    assert sorted(tags(engine)) == ["a", "b"]
    assert transitions.seen == [] and writer.retries == 0


def test_a_failed_operations_on_error_runs_before_the_operations_queued_after_it(engine: Engine) -> None:
    """In one batch and alone after it (the batch fails, and its operations run one by one): the
    later operation sees the mark the failed one's ``on_error`` left, and only the failed one has it."""
    writer = make_writer(engine, Transitions())
    failed: list[str] = []
    seen: list[list[str]] = []

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    def later(conn: Connection) -> int:
        seen.append(list(failed))
        return insert(conn, "later")

    async def main() -> None:
        first = writer.submit(insert, "first", on_error=lambda: failed.append("first"))
        bad = writer.submit(broken, on_error=lambda: failed.append("broken"))
        after = writer.submit(later)
        assert await first == 1
        with pytest.raises(Exception, match="no such table"):
            await bad
        assert await after == 1

    try:
        run(main)
    finally:
        writer.close()
    assert failed == ["broken"]
    assert seen[-1] == ["broken"]  # the last run of ``later``, the one that committed
    assert sorted(tags(engine)) == ["first", "later"]


def test_a_stopping_server_stops_waiting_for_the_store(engine: Engine) -> None:
    disk, transitions = Disk(engine), Transitions()
    writer = make_writer(engine, transitions)

    async def main() -> None:
        disk.fill(engine)
        pending = asyncio.ensure_future(writer.run(insert, "server"))
        await eventually(lambda: writer.health.state == "full")
        writer.stop_waiting()
        with pytest.raises(StoreUnavailableError, match="the server is stopping"):
            await pending

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == []


def test_operators_calls_alone_fail_without_declaring_an_outage(engine: Engine) -> None:
    """Nothing of the server's waits, so there is no outage to announce or to end: each call tries once."""
    disk, transitions = Disk(engine), Transitions()
    writer = make_writer(engine, transitions)

    async def main() -> None:
        disk.fill(engine)
        for _ in range(2):
            with pytest.raises(DiskFullError, match="database or disk is full"):
                await writer.run_or_fail(insert, "operator")
        assert writer.health.healthy
        disk.free()
        assert await writer.run_or_fail(insert, "operator") == 1

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == ["operator"]
    assert transitions.seen == [] and writer.retries == 0


def bytes_read_by_this_process() -> int:
    """Bytes through read(2) and pread(2) so far, from the page cache or not (Linux's rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="Linux's per-process I/O counters")
def test_the_writer_reads_back_a_large_row_it_wrote_from_its_own_cache(engine: Engine) -> None:
    """A job's input of a megabyte is written by one batch and read back by the next (its lease, its
    result): SQLite's default 2 MiB page cache had let it go, and the writer read it from the file."""
    writer = make_writer(engine, Transitions())
    pad = "y" * 1_000_000

    def write(conn: Connection) -> None:
        conn.execute(text("INSERT INTO rows (id, tag, pad) VALUES (1, 'big', :pad)"), {"pad": pad})
        conn.execute(text("INSERT INTO rows (tag, pad) SELECT 'filler', :pad FROM rows"), {"pad": "z" * 3_000_000})

    def read_back(conn: Connection) -> int:
        return len(conn.execute(text("SELECT pad FROM rows WHERE id = 1")).scalar_one())

    async def main() -> None:
        await writer.run(write)
        before = bytes_read_by_this_process()
        assert await writer.run(read_back) == len(pad)
        read = bytes_read_by_this_process() - before
        assert read < 100_000, f"reading the row back read {read} bytes of the file"

    try:
        run(main)
    finally:
        writer.close()
