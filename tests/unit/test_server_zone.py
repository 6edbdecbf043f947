"""The server's own zone (no ``time-zone`` in the script) is the process's zone, under any ``TZ``.

These tests set ``TZ`` in this process and call ``time.tzset()``, then put both back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import pytest

from netdist.jobscript import IdleWindow, JobSettings
from netdist.server import policy
from netdist.server.scheduler import SERVER_ZONE, NamedZone, Schedule, Scheduler
from tests.clock import ManualClock

ZONES = ["UTC", "America/New_York", "Europe/Zurich", "Asia/Kolkata", "Australia/Lord_Howe"]


@pytest.fixture
def process_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    def set_tz(key: str) -> None:
        monkeypatch.setenv("TZ", key)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("key", ZONES)
def test_the_server_zone_follows_tz_through_the_year(key: str, process_tz: Callable[[str], None]) -> None:
    process_tz(key)
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    for at in range(start, start + 366 * 86400, 1800):
        assert SERVER_ZONE.offset(at) == NamedZone(key).offset(at), datetime.fromtimestamp(at, UTC)


@pytest.mark.parametrize("key", ZONES)
def test_a_schedule_without_time_zone_runs_in_the_process_zone(key: str, process_tz: Callable[[str], None]) -> None:
    process_tz(key)
    now = datetime(2026, 6, 1, 12, 0, 2, tzinfo=UTC).timestamp()
    scheduler = Scheduler(clock=ManualClock(wall=now))  # the default: the server process's zone
    scheduler.due({"fast": Schedule(cron="* * * * * */5"), "daily": Schedule(cron="0 3 * * *")})
    assert scheduler.next_start["fast"] == now + 3
    daily = datetime.fromtimestamp(scheduler.next_start["daily"], ZoneInfo(key))
    assert (daily.hour, daily.minute) == (3, 0) and 0 < scheduler.next_start["daily"] - now <= 86400


@pytest.mark.parametrize("key", ZONES)
def test_an_idle_window_without_time_zone_is_read_in_the_process_zone(
    key: str, process_tz: Callable[[str], None]
) -> None:
    # policy.in_idle_window reads local time with datetime.fromtimestamp(now, None): the C library's
    # zone, the same one the scheduler uses; it never hands a naive local time to anything that reads UTC.
    process_tz(key)
    window = JobSettings(
        package="p",
        handler="H",
        job="j",
        idle_time=IdleWindow(start=clock_time(22), end=clock_time(6)),
    )
    zone = ZoneInfo(key)
    for day in (datetime(2026, 1, 15, tzinfo=zone), datetime(2026, 7, 15, tzinfo=zone)):
        assert policy.in_idle_window(window, day.replace(hour=23, tzinfo=zone).timestamp())
        assert policy.in_idle_window(window, day.replace(hour=5, minute=59, tzinfo=zone).timestamp())
        assert not policy.in_idle_window(window, day.replace(hour=12, tzinfo=zone).timestamp())
        assert not policy.in_idle_window(window, day.replace(hour=6, tzinfo=zone).timestamp())
