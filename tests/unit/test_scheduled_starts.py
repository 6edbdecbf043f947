"""Scheduled starts against a real SQLite store on a hand-turned clock: a due schedule starts its
instance once, the life cycle's waiting states are left alone, a refused start is logged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdist.errors import FailedPreconditionError
from netdist.server.scheduled_starts import ScheduledStarts
from netdist.server.states import HandlerState
from netdist.server.store import catalog
from netdist.server.store.engine import default_url, open_engine
from netdist.server.store.facade import Store
from tests.clock import ManualClock

EVERY_5_SECONDS = "* * * * * */5"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(open_engine(default_url(tmp_path)))
    yield s
    s.close()


def add(store: Store, handler_id: str, state: HandlerState, schedule: str | None = EVERY_5_SECONDS) -> None:
    settings = {"schedule": schedule, "time-zone": "UTC"} if schedule else {}
    with store.engine.begin() as conn:
        catalog.insert_handler(
            conn,
            id=handler_id,
            package="p",
            handler="H",
            job_name=handler_id,
            script_sha256="0" * 64,
            script_source="",
            settings_json=json.dumps(settings),
            custom_json="{}",
            state=state,
            message="",
            handler_state_json="{}",
            summary="",
            total=None,
            exhausted=False,
            sequenced_errors=0,
            created_at=0.0,
            script_uploaded_by="",
        )


def test_due_schedules_start_their_instances_on_the_injected_clock(store: Store) -> None:
    for handler_id, state in [
        ("idle", HandlerState.IDLE),
        ("stopped", HandlerState.STOPPED),
        ("finished", HandlerState.FINISHED),
        ("running", HandlerState.RUNNING),
        ("paused", HandlerState.PAUSED),
        ("disabled", HandlerState.DISABLED),
        ("failed", HandlerState.FAILED),
    ]:
        add(store, handler_id, state)
    add(store, "refused", HandlerState.IDLE)
    add(store, "unscheduled", HandlerState.IDLE, schedule=None)
    clock = ManualClock(wall=1_767_225_601.0)  # 00:00:01: the next five-second moment is 4 s away
    started: list[str] = []
    lines: list[tuple[str, str, str]] = []

    async def start(handler_id: str) -> None:
        if handler_id == "refused":
            raise FailedPreconditionError("package 'p' is not uploaded (or was removed)")
        started.append(handler_id)

    starts = ScheduledStarts(
        store, clock=clock, log_sink=lambda h, level, _s, m: lines.append((h, level, m)), start=start
    )

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        first = await starts.run_once()
        clock.advance(4)
        second = await starts.run_once()
        third = await starts.run_once()  # the same moment does not start twice
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first == [] and third == []
    assert sorted(second) == ["finished", "idle", "refused", "stopped"]
    assert sorted(started) == ["finished", "idle", "stopped"]
    assert ("refused", "warning", "scheduled start failed: package 'p' is not uploaded (or was removed)") in lines
    assert set(starts.next_start) == {
        "idle",
        "stopped",
        "finished",
        "running",
        "paused",
        "disabled",
        "failed",
        "refused",
    }
    assert all(at == clock.wall + 5 for at in starts.next_start.values())


def test_stop_ends_the_pass_task(store: Store) -> None:
    starts = ScheduledStarts(store, clock=ManualClock(), log_sink=lambda *_: None, start=lambda _h: asyncio.sleep(0))

    async def scenario() -> set[str]:
        starts.start()
        await starts.stop()
        return {t.get_name() for t in asyncio.all_tasks()}

    assert "netdist-schedules" not in asyncio.run(scenario())
