"""The handler log buffer against a real SQLite store: lines wait for a flush, carry the injected
clock's time, are clipped, pruned per handler, and written on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdist.server.handler_log import MAX_MESSAGE, HandlerLog
from netdist.server.store import catalog
from netdist.server.store.engine import default_url, open_engine
from netdist.server.store.facade import Store
from tests.clock import ManualClock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(open_engine(default_url(tmp_path)))
    yield s
    s.close()


def stored(store: Store, handler_id: str) -> list[tuple[float, str, str, str]]:
    with store.engine.connect() as conn:
        return [(r.at, r.level, r.source, r.message) for r in catalog.read_log(conn, handler_id)]


def test_lines_wait_for_a_flush_and_carry_the_clocks_time(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    handler_log = HandlerLog(store.writer, clock=clock)

    async def scenario() -> None:
        with caplog.at_level(logging.INFO, logger="netdist.server.manager"):
            handler_log("h1", "info", "server", "started")
            clock.advance(2.5)
            handler_log("h1", "error", "handler", "x" * (MAX_MESSAGE + 5))
            handler_log("h2", "chatty", "handler", "an unknown level is logged as info")
        assert handler_log.pending == 3 and stored(store, "h1") == []
        await handler_log.flush()
        assert handler_log.pending == 0

    asyncio.run(scenario())
    start = ManualClock().wall
    assert stored(store, "h1") == [
        (start, "info", "server", "started"),
        (start + 2.5, "error", "handler", "x" * MAX_MESSAGE),
    ]
    assert stored(store, "h2") == [(start + 2.5, "chatty", "handler", "an unknown level is logged as info")]
    # the server's own log has each line at once, whole, at its level
    assert [(r.levelno, r.getMessage()[:14]) for r in caplog.records] == [
        (logging.INFO, "[h1] started"),
        (logging.ERROR, "[h1] xxxxxxxxx"),
        (logging.INFO, "[h2] an unknow"),
    ]


def test_a_flush_prunes_only_the_handlers_it_names(store: Store) -> None:
    handler_log = HandlerLog(store.writer, clock=ManualClock())
    keep = catalog.LOG_KEEP

    async def scenario() -> None:
        for handler_id in ("h1", "h2"):
            for n in range(keep + 3):
                handler_log(handler_id, "info", "handler", f"line {n}")
        await handler_log.flush(prune=["h1"])

    asyncio.run(scenario())
    h1, h2 = stored(store, "h1"), stored(store, "h2")
    assert len(h1) == keep and h1[0][3] == "line 3" and h1[-1][3] == f"line {keep + 2}"
    assert len(h2) == keep + 3


def test_stop_ends_the_flush_task_and_writes_what_is_left(store: Store) -> None:
    handler_log = HandlerLog(store.writer, clock=ManualClock())

    async def scenario() -> set[str]:
        handler_log.start(running=lambda: ["h1"])
        handler_log("h1", "info", "server", "last words")
        await handler_log.stop()
        return {t.get_name() for t in asyncio.all_tasks()}

    tasks = asyncio.run(scenario())
    assert "netdist-handler-log" not in tasks
    assert [line[3] for line in stored(store, "h1")] == ["last words"]
