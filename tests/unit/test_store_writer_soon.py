"""``GroupCommitWriter.submit_soon``: a small write runs on the event loop when the writer is idle,
and never out of order with what the writer's thread has, against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from tests.unit.test_store_writer import Disk, Transitions, engine, eventually, insert, make_writer, run, tags

__all__ = ["engine"]  # the fixture, used by name


def noting(where: list[tuple[str, str]], tag: str) -> Any:
    """An operation that inserts ``tag`` and notes the thread it ran on."""

    def op(conn: Connection) -> int:
        where.append((tag, threading.current_thread().name))
        return insert(conn, tag)

    return op


def test_an_idle_writer_lets_the_loop_commit_a_small_write_with_what_follows_in_the_turn(engine: Engine) -> None:
    writer = make_writer(engine, Transitions())
    where: list[tuple[str, str]] = []

    async def main() -> None:
        loop_thread = threading.current_thread().name
        before = writer.commits
        soon = writer.submit_soon(noting(where, "a"))
        after = writer.submit(noting(where, "b"))  # the same turn: it joins the batch, after it
        # What the turn set going runs first (a lease's send to its worker, in the server).
        asyncio.get_running_loop().call_soon(lambda: where.append(("callback", threading.current_thread().name)))
        assert not soon.done()
        assert await soon == 1 and await after == 1
        assert where == [("callback", loop_thread), ("a", loop_thread), ("b", loop_thread)]
        assert writer.commits == before + 1

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == ["a", "b"]


def test_a_write_from_a_later_turn_sends_the_waiting_batch_to_the_thread_first(engine: Engine) -> None:
    # Only what the same turn submits joins a batch bound for the loop: a later write, of any size (a
    # dispatch pass's leases, a retention batch), must not run on the loop, nor overtake it.
    writer = make_writer(engine, Transitions())
    where: list[tuple[str, str]] = []

    async def main() -> None:
        soon = writer.submit_soon(noting(where, "soon"))
        await asyncio.sleep(0)  # the next turn: the batch has not run yet
        assert not soon.done()
        later = writer.submit(noting(where, "later"))
        assert await soon == 1 and await later == 1

    try:
        run(main)
    finally:
        writer.close()
    assert where == [("soon", "netdist-store-writer"), ("later", "netdist-store-writer")]
    assert tags(engine) == ["soon", "later"]


def test_a_small_write_waits_its_turn_behind_what_the_writers_thread_holds(engine: Engine) -> None:
    writer = make_writer(engine, Transitions())
    where: list[tuple[str, str]] = []
    release = threading.Event()

    def slow(conn: Connection) -> int:
        where.append(("slow", threading.current_thread().name))
        release.wait(10)
        return insert(conn, "slow")

    async def main() -> None:
        first = writer.submit(slow)
        await eventually(lambda: where)  # the thread is in it
        soon = writer.submit_soon(noting(where, "soon"))
        await asyncio.sleep(0.05)  # a chance to jump the queue, if it could
        assert not soon.done()
        release.set()
        assert await first == 1 and await soon == 1

    try:
        run(main)
    finally:
        writer.close()
    assert [tag for tag, _ in where] == ["slow", "soon"]
    assert {name for _, name in where} == {"netdist-store-writer"}
    assert tags(engine) == ["slow", "soon"]


def test_an_operations_own_error_in_a_loop_batch_fails_only_it_and_nothing_is_written_twice(engine: Engine) -> None:
    writer = make_writer(engine, Transitions())

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def main() -> None:
        results = await asyncio.gather(
            writer.submit_soon(insert, "a"), writer.submit(broken), writer.submit(insert, "b"), return_exceptions=True
        )
        assert results[0] == 1 and results[2] == 1  # each inserted once: the loop's try was rolled back
        assert "no such table" in str(results[1])

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == ["a", "b"]


def test_a_loop_batch_that_meets_a_full_disk_waits_it_out_on_the_thread_and_commits_once(engine: Engine) -> None:
    disk, transitions = Disk(engine), Transitions()
    writer = make_writer(engine, transitions)

    async def main() -> None:
        disk.fill(engine)
        soon = writer.submit_soon(insert, "w")
        await eventually(lambda: writer.health.state == "full")
        await eventually(lambda: writer.retries >= 2)
        assert not soon.done()
        disk.free()
        assert await soon == 1

    try:
        run(main)
    finally:
        writer.close()
    assert tags(engine) == ["w"]
    assert transitions.seen == [("ok", "full"), ("full", "ok")]


@pytest.mark.parametrize("early", [False, True], ids=["plain", "early"])
@pytest.mark.parametrize("closing", ["stop_waiting", "close"])
def test_a_loop_batch_pending_when_the_writer_closes_is_answered(engine: Engine, closing: str, early: bool) -> None:
    # With an early call (a result write's), the batch is committed by the thread: it is answered all the same.
    writer = make_writer(engine, Transitions())
    calls: list[int] = []

    async def main() -> None:
        soon = writer.submit_soon(insert, "late", early=calls.append if early else None)
        getattr(writer, closing)()  # in the same turn, before the batch ran
        assert await asyncio.wait_for(soon, 10) == 1  # committed once (the loop's turn, or the thread's)

    try:
        run(main)
    finally:
        writer.close()
    assert calls == ([1] if early else [])
    assert tags(engine) == ["late"]


def test_a_loop_batch_never_waits_for_a_lock_another_process_holds(engine: Engine, tmp_path: Path) -> None:
    # The writer's thread may wait out SQLite's busy timeout (30 s); the event loop must not.
    writer = make_writer(engine, Transitions())
    blocker = sqlite3.connect(tmp_path / "netdist.db", isolation_level=None)

    async def main() -> None:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        soon = writer.submit_soon(insert, "locked")
        started = time.monotonic()
        await asyncio.sleep(0)  # the loop's turn ends: the batch tries, fails at once, goes to the thread
        assert time.monotonic() - started < 5  # not the 30 s busy timeout
        assert not soon.done()
        blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(soon, 40) == 1

    try:
        run(main)
    finally:
        blocker.close()
        writer.close()
    assert tags(engine) == ["locked"]


def test_after_a_loop_batch_the_thread_still_waits_for_a_lock_held_elsewhere(engine: Engine, tmp_path: Path) -> None:
    # The loop's batch sets the connection's busy timeout to 0 for its BEGIN only: the thread, on the
    # same connection, waits out a short lock as before instead of declaring an outage.
    transitions = Transitions()
    writer = make_writer(engine, transitions)
    blocker = sqlite3.connect(tmp_path / "netdist.db", isolation_level=None)

    async def main() -> None:
        assert await writer.submit_soon(insert, "loop") == 1
        blocker.execute("BEGIN IMMEDIATE")
        waiting = writer.submit(insert, "thread")
        await asyncio.sleep(0.2)
        assert not waiting.done() and writer.health.healthy
        blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(waiting, 40) == 1

    try:
        run(main)
    finally:
        blocker.close()
        writer.close()
    assert tags(engine) == ["loop", "thread"]
    assert transitions.seen == []
