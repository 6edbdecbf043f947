"""A write's ``early`` call: what its operation returned, on the event loop, once, before the commit,
against a real SQLite file (store/writer.py). The result write hands its results to their handler
with it, so that the handler works while the commit waits for the disk."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from tests.unit.test_store_writer import Transitions, engine, insert, make_writer, run, tags

__all__ = ["engine"]  # the fixture, used by name


def committed_tags(tmp_path: Path) -> list[str]:
    """The tags another connection sees: what is committed."""
    with sqlite3.connect(tmp_path / "netdist.db") as other:
        return [row[0] for row in other.execute("SELECT tag FROM rows ORDER BY id")]


def commits_wait_for(engine: Engine, called: threading.Event) -> None:
    """The writer's thread commits only once ``called`` is set (or 10 s passed: then the test fails)."""

    @event.listens_for(engine, "commit")
    def _hold(_conn: Any) -> None:
        if threading.current_thread().name == "netdist-store-writer":
            called.wait(10)


def add_a_deferred_key(engine: Engine) -> None:
    """A foreign key checked at COMMIT: a child row with no parent fails the commit, not the statement."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")


@pytest.mark.parametrize("way", ["submit_soon", "submit"])
def test_early_hands_on_the_result_on_the_loop_before_the_commit(engine: Engine, tmp_path: Path, way: str) -> None:
    writer = make_writer(engine, Transitions())
    calls: list[tuple[int, str, list[str]]] = []
    called = threading.Event()
    commits_wait_for(engine, called)

    async def main() -> None:
        loop_thread = threading.current_thread().name

        def early(count: int) -> None:
            calls.append((count, threading.current_thread().name, committed_tags(tmp_path)))
            called.set()

        write = getattr(writer, way)(insert, "a", early=early)
        assert await write == 1
        assert calls == [(1, loop_thread, [])]  # the row was not committed yet when the result went on
        assert committed_tags(tmp_path) == ["a"]

    try:
        run(main)
    finally:
        writer.close()


def test_a_loop_batch_with_an_early_call_is_committed_by_the_thread_in_order(engine: Engine) -> None:
    # The loop runs the operations, makes the early call and goes on; the thread commits. A write
    # submitted meanwhile waits for that commit: nothing overtakes it.
    writer = make_writer(engine, Transitions())
    order: list[str] = []

    async def main() -> None:
        ran = asyncio.Event()

        def early(_: int) -> None:
            order.append("early a")
            ran.set()

        first = writer.submit_soon(insert, "a", early=early)
        first.add_done_callback(lambda _: order.append("committed a"))
        await ran.wait()
        second = writer.submit_soon(insert, "b")  # the thread holds a's commit: this goes to it, after
        second.add_done_callback(lambda _: order.append("committed b"))
        assert await first == 1 and await second == 1

    try:
        run(main)
    finally:
        writer.close()
    assert order == ["early a", "committed a", "committed b"]
    assert tags(engine) == ["a", "b"]


def test_an_operation_that_fails_makes_no_early_call(engine: Engine) -> None:
    writer = make_writer(engine, Transitions())
    calls: list[Any] = []

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def main() -> None:
        with pytest.raises(Exception, match="no such table"):
            await writer.submit_soon(broken, early=calls.append)

    try:
        run(main)
    finally:
        writer.close()
    assert calls == []


def test_a_commit_that_fails_after_the_early_call_runs_the_batch_again_without_a_second_call(
    engine: Engine,
) -> None:
    # The early call's caller is told twice by no one: once, and then the write's answer. Here the
    # commit of the loop's batch fails (a deferred foreign key another operation broke); the thread
    # runs each operation alone, and the early one commits without being handed on again.
    add_a_deferred_key(engine)
    writer = make_writer(engine, Transitions())
    calls: list[int] = []
    runs: list[str] = []

    def breaks_the_commit_once(conn: Connection) -> int:
        runs.append(threading.current_thread().name)
        if len(runs) == 1:  # a child with no parent: the COMMIT fails, not the statement
            conn.exec_driver_sql("INSERT INTO child (pid) VALUES (42)")
        return insert(conn, "other")

    async def main() -> None:
        early = writer.submit_soon(insert, "early", early=calls.append)
        other = writer.submit(breaks_the_commit_once)  # the same turn: the same batch
        assert await early == 1 and await other == 1

    try:
        run(main)
    finally:
        writer.close()
    assert calls == [1]
    assert len(runs) == 2 and runs[1] == "netdist-store-writer"
    assert tags(engine) == ["early", "other"]


def test_a_commit_that_fails_for_good_after_the_early_call_fails_the_write(engine: Engine) -> None:
    add_a_deferred_key(engine)
    writer = make_writer(engine, Transitions())
    calls: list[int] = []

    def orphan(conn: Connection) -> int:
        conn.exec_driver_sql("INSERT INTO child (pid) VALUES (42)")
        return insert(conn, "orphan")

    async def main() -> None:
        with pytest.raises(Exception, match="FOREIGN KEY constraint failed"):
            await writer.submit_soon(orphan, early=calls.append)

    try:
        run(main)
    finally:
        writer.close()
    assert calls == [1]  # handed on before the commit: the caller must wait for the answer
    assert tags(engine) == []
