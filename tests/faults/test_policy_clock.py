"""Rules that read the clock let jobs go when their time comes, with no other event: the end of an
idle window, the midnight that starts the daily budgets again. And while they hold jobs back, the
admin views say which one does.

Seen from outside: two idle workers, ``idle-time = "22:00-22:38"`` (server zone UTC); at 22:38:48
and 22:39:18 ``handlers list`` still showed 5 available, 0 pending; only an unrelated ``jobs add``
at 22:39:22 sent the jobs out.

The server's wall clock is set with libfaketime (tests/faults/wall_clock.py) a little before the
moment, in a zone with a half-hour offset (its own ``TZ``, no ``time-zone`` key); workers run on the
real clock and stay idle: nothing but the clock can send the jobs out.
"""

from __future__ import annotations

import math
import time
import zoneinfo
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from netdist.api.v1 import admin_pb2
from netdist.server.store.schema import jobs
from netdist.testing import wait_until
from tests.faults.conftest import Rig
from tests.faults.wall_clock import faketime_env

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

ZONE = "Asia/Kolkata"  # UTC+5:30, no daylight saving: the server's zone
LATE_SECONDS = 6.0
"""How long after the moment (the server's clock) the jobs may take to go out: a tick, the offset file
read again (every second), a lease on its way, a job started; a whole POLICY_RECHECK_SECONDS is more."""


def server_clock(rig: Rig, offset: Path, moment: float, *, before: int) -> tuple[Path, dict[str, str]]:
    """The server restarted on a wall clock ``before`` seconds short of ``moment``; (offset file, env)."""
    env = {**faketime_env(offset, offset_seconds=round(moment - before - time.time())), "TZ": ZONE}
    rig.restart_server(0, env=env)
    return offset, env


def set_server_clock(offset: Path, moment: float, *, before: int) -> float:
    """Set the server's wall clock ``before`` seconds short of ``moment``; the real time it reaches it."""
    now = time.time()
    offset.write_text(f"{round(moment - before - now):+d}\n")
    return now + before


def leased_at(rig: Rig, hid: str) -> list[float]:
    """When each of the handler's jobs that went out was last leased, by the server's clock, in order."""
    with rig.inv.engine.connect() as conn:
        found = conn.execute(select(jobs.c.leased_at).where(jobs.c.handler_id == hid)).scalars()
        return sorted(float(x) for x in found if x is not None)


def local(moment: float) -> str:
    return f"{datetime.fromtimestamp(moment, zoneinfo.ZoneInfo(ZONE)):%H:%M}"


@pytest.mark.timeout(90)
def test_jobs_go_out_when_the_idle_window_ends_with_no_other_event(rig: Rig) -> None:
    end = math.ceil((time.time() + 3600) / 60) * 60  # a minute an hour away: outside the window in real time
    window = f'idle-time = "{local(end - 600)}-{local(end)}"'
    offset, _ = server_clock(rig, rig.root / "faketime", end, before=300)
    rig.upload()
    for name in ("w1", "w2"):
        rig.worker_id(rig.worker(name))
    hid = rig.add("idle", settings=f"auto-start = true\n{window}", count=5)

    def held() -> admin_pb2.HandlerInfo | None:
        info = rig.api.handler(hid)
        return info if info.jobs_available == 5 and info.waiting else None

    info = wait_until(held, 30, what="the handler's jobs held back by its idle window")
    assert (info.state, info.jobs_pending, info.jobs_processed) == ("running", 0, 0)
    assert info.waiting == f"idle-time window until {local(end)}"
    rig.warmed_up()
    reached = set_server_clock(offset, end, before=8)
    rig.finish(hid, timeout=8 + LATE_SECONDS + 10)  # a worker's job takes no time: done soon after they go
    first = min(leased_at(rig, hid))
    assert first >= end - 1, "a job went out inside the window"
    assert time.time() - reached < LATE_SECONDS + 10
    assert first - end < LATE_SECONDS, f"the jobs went out {first - end:.1f} s after the window ended"
    assert rig.api.handler(hid).waiting == ""
    rig.verify(hid, count=5)


@pytest.mark.timeout(90)
def test_a_worker_at_its_daily_budget_gets_jobs_again_at_midnight(rig: Rig) -> None:
    zone = zoneinfo.ZoneInfo(ZONE)
    tomorrow = datetime.now(zone).date() + timedelta(days=2)
    midnight = datetime.combine(tomorrow, datetime.min.time(), tzinfo=zone).timestamp()
    offset, _ = server_clock(rig, rig.root / "faketime", midnight, before=300)
    rig.upload()
    rig.worker_id(rig.worker("w1"))
    budget = "max-time-per-client-per-day = 1\nmax-jobs-per-client = 1"  # one job at a time: no prefetch
    hid = rig.add("budget", settings=f"auto-start = true\n{budget}", count=3, sleep=1.5)

    def capped(processed: int) -> admin_pb2.HandlerInfo | None:
        info = rig.api.handler(hid)
        return info if info.jobs_processed == processed and info.jobs_pending == 0 and info.waiting else None

    info = wait_until(lambda: capped(1), 30, what="the worker to reach its daily budget")
    assert info.waiting == "every allowed worker reached max-time-per-client-per-day (until 00:00)"
    assert info.jobs_available == 2
    rig.warmed_up()
    set_server_clock(offset, midnight, before=5)
    info = wait_until(lambda: capped(2), 5 + LATE_SECONDS + 10, what="one more job after midnight")
    leased = leased_at(rig, hid)
    assert len(leased) == 2 and 0 <= leased[1] - midnight < LATE_SECONDS, [x - midnight for x in leased]
    rig.verify(hid, count=3, finished=False)
