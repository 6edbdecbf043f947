"""Cron schedules on a hand-turned clock: the right moments in every zone, across DST changes and clock jumps.

The oracle lists the wall times a cron expression matches (croniter on a
naive calendar) and maps each to instants with zoneinfo's fold rules; the
scheduler walks offset changes instead, so the two meet only in the result.
"""

from __future__ import annotations

import bisect
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter, croniter_range
from hypothesis import given, settings
from hypothesis import strategies as st

from netdist.server.scheduler import NamedZone, Schedule, Scheduler, is_fixed_hour
from tests.clock import ManualClock

ZONES = ["UTC", "America/New_York", "Europe/Zurich", "Asia/Kolkata", "Australia/Lord_Howe"]
EXPRESSIONS = [
    "0 * * * *",
    "*/15 * * * *",
    "30 2 * * *",
    "45 1 * * *",
    "0 8-18 * * 1-5",
    "0 2,3 * * *",
    "@daily",
    "* * * * * */5",
]
CHANGES = {  # the 2026 daylight-saving changes (UTC) of the zones that have them
    "America/New_York": [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)],
    "Europe/Zurich": [datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)],
    "Australia/Lord_Howe": [datetime(2026, 4, 4, 15, tzinfo=UTC), datetime(2026, 10, 3, 15, 30, tzinfo=UTC)],
}
HOUR, DAY = 3600, 86400


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def local(at: float, key: str) -> str:
    return datetime.fromtimestamp(at, ZoneInfo(key)).strftime("%Y-%m-%d %H:%M:%S%z")


def oracle(expression: str, key: str, start: float, end: float) -> list[int]:
    """Every start moment in (start, end]: matching wall times, mapped to instants by zoneinfo."""
    zone = ZoneInfo(key)
    fixed = is_fixed_hour(expression)

    def wall(at: float) -> datetime:
        return datetime.fromtimestamp(at, zone).replace(tzinfo=None)

    def instants(naive: datetime) -> list[int]:
        found = {int(naive.replace(tzinfo=zone, fold=fold).timestamp()) for fold in (0, 1)}
        return sorted(t for t in found if wall(t) == naive)

    moments: set[int] = set()
    margin = timedelta(minutes=61)  # the largest change of offset in ZONES is an hour
    for naive in croniter_range(wall(start) - margin, wall(end) + margin, expression, ret_type=datetime):
        real = instants(naive)
        if real:
            moments.update(real[:1] if fixed else real)
        elif fixed:  # skipped by a spring-forward change: starts when the wall clock next exists
            later = naive
            while not instants(later):
                later += timedelta(minutes=1)
            moments.add(instants(later)[0])
    return sorted(m for m in moments if start < m <= end)


def scheduler_in(key: str, role: str, clock: ManualClock) -> tuple[Scheduler, Schedule]:
    """A scheduler reading ``key`` as the server's zone, or as the job script's ``time-zone``."""
    if role == "server":
        return Scheduler(clock=clock, server_zone=NamedZone(key)), Schedule(cron="")
    return Scheduler(clock=clock, server_zone=NamedZone("Pacific/Chatham")), Schedule(cron="", time_zone=key)


def starts(scheduler: Scheduler, schedule: Schedule, clock: ManualClock, *, until: float, step: float) -> list[float]:
    """Turn the clock in steps and note the wall time of each start."""
    seen = []
    scheduler.due({"h": schedule})
    while clock.wall < until:
        clock.advance(step)
        if scheduler.due({"h": schedule}):
            seen.append(clock.wall)
    return seen


# -- the next start ------------------------------------------------------------------------------


def probe_instants(key: str) -> list[float]:
    plain = [ts(datetime(2026, 1, 15, 12, 7, 31, tzinfo=UTC)), ts(datetime(2026, 7, 15, 23, 59, 59, tzinfo=UTC))]
    near_changes = [ts(c) + d for c in CHANGES.get(key, []) for d in (-2 * HOUR, -HOUR - 1, -1, 0, 1, 1799, HOUR)]
    return [*plain, *near_changes, plain[0] + 0.5]


@pytest.mark.parametrize("role", ["server", "script"])
@pytest.mark.parametrize("key", ZONES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_next_start_is_the_next_cron_moment_in_the_zone(expression: str, key: str, role: str) -> None:
    for now in probe_instants(key):
        clock = ManualClock(wall=now)
        scheduler, schedule = scheduler_in(key, role, clock)
        schedule = Schedule(cron=expression, time_zone=schedule.time_zone)
        assert scheduler.due({"h": schedule}) == []
        due = scheduler.next_start["h"]
        horizon = 60 if len(expression.split()) == 6 else 3 * DAY
        expected = oracle(expression, key, now, now + horizon)[0]
        assert due == expected, (local(now, key), local(due, key), local(expected, key))
        assert due > now
        wall = datetime.fromtimestamp(due, ZoneInfo(key)).replace(tzinfo=None)
        at_a_change = due in {ts(c) for c in CHANGES.get(key, [])}  # a skipped moment of a fixed-hour schedule
        assert croniter.match(expression, wall) or (is_fixed_hour(expression) and at_a_change)


def test_a_zone_without_time_zone_is_the_servers_not_utc() -> None:
    # The reported bug: a naive local time read as UTC put New York's next start hours in the past.
    now = ts(datetime(2026, 6, 1, 12, 0, 2, tzinfo=UTC))
    for key, daily in [("America/New_York", "2026-06-02 03:00:00-0400"), ("Europe/Zurich", "2026-06-02 03:00:00+0200")]:
        scheduler = Scheduler(clock=ManualClock(wall=now), server_zone=NamedZone(key))
        scheduler.due({"fast": Schedule(cron="* * * * * */5"), "daily": Schedule(cron="0 3 * * *")})
        assert scheduler.next_start["fast"] == now + 3
        assert local(scheduler.next_start["daily"], key) == daily
    scheduler = Scheduler(clock=ManualClock(wall=now), server_zone=NamedZone("America/New_York"))
    scheduler.due({"daily": Schedule(cron="0 3 * * *", time_zone="Asia/Kolkata")})  # the script's zone wins
    assert local(scheduler.next_start["daily"], "Asia/Kolkata") == "2026-06-02 03:00:00+0530"


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 8,20 * * *", True),
        ("@daily", True),
        ("@weekly", True),
        ("* 3 * * * */5", True),
        ("0 * * * *", False),
        ("@hourly", False),
        ("*/15 8-18 * * 1-5", False),
        ("0 */2 * * *", False),
        ("0 1-3 * * *", False),
        ("* * * * * */5", False),
    ],
)
def test_fixed_hour_or_interval(expression: str, fixed: bool) -> None:
    assert is_fixed_hour(expression) is fixed


# -- daylight saving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["server", "script"])
@pytest.mark.parametrize(("key", "change"), [(k, c) for k in ("Europe/Zurich", "America/New_York") for c in CHANGES[k]])
def test_an_hourly_schedule_starts_every_real_hour_across_a_change(key: str, change: datetime, role: str) -> None:
    # Interval semantics: both passes of a repeated hour, nothing in a skipped one.
    clock = ManualClock(wall=ts(change) - 4 * HOUR - 60)
    scheduler, schedule = scheduler_in(key, role, clock)
    seen = starts(
        scheduler, Schedule(cron="0 * * * *", time_zone=schedule.time_zone), clock, until=ts(change) + 4 * HOUR, step=60
    )
    assert seen == [ts(change) + h * HOUR for h in range(-4, 5)]
    assert len({local(t, key)[:16] for t in seen}) == (9 if change.month == 3 else 8)  # one wall hour twice in the fall


DAILY = [  # zone, cron, the change, the start on the day of the change (local), why
    ("Europe/Zurich", "30 2 * * *", 0, "2026-03-29 03:00:00+0200"),  # 02:30 is skipped: starts at the change
    ("Europe/Zurich", "30 2 * * *", 1, "2026-10-25 02:30:00+0200"),  # 02:30 happens twice: the first one only
    ("America/New_York", "30 2 * * *", 0, "2026-03-08 03:00:00-0400"),
    ("America/New_York", "30 1 * * *", 1, "2026-11-01 01:30:00-0400"),
]


@pytest.mark.parametrize("role", ["server", "script"])
@pytest.mark.parametrize(("key", "expression", "which", "on_the_day"), DAILY)
def test_a_daily_schedule_starts_once_a_day_across_a_change(
    key: str, expression: str, which: int, on_the_day: str, role: str
) -> None:
    change = ts(CHANGES[key][which])
    clock = ManualClock(wall=change - 36 * HOUR)
    scheduler, schedule = scheduler_in(key, role, clock)
    seen = starts(
        scheduler, Schedule(cron=expression, time_zone=schedule.time_zone), clock, until=change + 36 * HOUR, step=60
    )
    days = [local(t, key)[:10] for t in seen]
    assert len(seen) == 3 and len(set(days)) == 3, [local(t, key) for t in seen]
    assert local(seen[1], key) == on_the_day


# -- clock jumps ---------------------------------------------------------------------------------------


def test_a_forward_jump_starts_once_then_follows_the_new_time() -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 9, 0, tzinfo=UTC)) - 0.5)
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("Europe/Zurich"))
    schedule = Schedule(cron="* * * * * */5")
    assert len(starts(scheduler, schedule, clock, until=clock.wall + 20, step=1)) == 4
    clock.jump_wall(HOUR)  # 720 moments jumped over
    clock.advance(0.5)
    assert scheduler.due({"h": schedule}) == ["h"]  # one start for all of them
    assert 0 < scheduler.next_start["h"] - clock.wall <= 5
    assert len(starts(scheduler, schedule, clock, until=clock.wall + 20, step=1)) == 4


def test_a_forward_jump_over_a_daily_moment_starts_it_once() -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 2, 30, tzinfo=UTC)))
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("UTC"))
    schedule = Schedule(cron="0 3 * * *")
    assert scheduler.due({"h": schedule}) == []
    clock.jump_wall(HOUR)
    assert scheduler.due({"h": schedule}) == ["h"]
    assert local(scheduler.next_start["h"], "UTC") == "2026-05-05 03:00:00+0000"


def test_a_backward_jump_does_not_pause_an_interval_schedule() -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 9, 0, tzinfo=UTC)) - 0.5)
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("America/New_York"))
    schedule = Schedule(cron="* * * * * */5")
    before = starts(scheduler, schedule, clock, until=clock.wall + 10, step=1)
    clock.jump_wall(-HOUR)
    clock.advance(0.25)
    assert scheduler.due({"h": schedule}) == []
    assert 0 < scheduler.next_start["h"] - clock.wall <= 5  # not an hour away
    after = starts(scheduler, schedule, clock, until=clock.wall + 20, step=1)
    assert len(before) == 2 and len(after) == 4


def test_a_small_backward_step_does_not_repeat_the_moment_just_started() -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 9, 0, tzinfo=UTC)) - 0.5)
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("UTC"))
    schedule = Schedule(cron="* * * * * */5")
    scheduler.due({"h": schedule})
    clock.advance(0.75)
    assert scheduler.due({"h": schedule}) == ["h"]  # 09:00:00
    clock.jump_wall(-1.5)
    clock.advance(0.25)
    assert scheduler.due({"h": schedule}) == []
    assert local(scheduler.next_start["h"], "UTC") == "2026-05-04 09:00:05+0000"


@pytest.mark.parametrize("key", ["UTC", "Europe/Zurich"])
def test_a_backward_jump_does_not_start_a_fixed_hour_moment_twice(key: str) -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 2, 50, tzinfo=ZoneInfo(key))))
    scheduler = Scheduler(clock=clock, server_zone=NamedZone(key))
    schedule = Schedule(cron="0,30 3 * * *")
    assert len(starts(scheduler, schedule, clock, until=clock.wall + 50 * 60, step=60)) == 2  # 03:00, 03:30
    clock.jump_wall(-HOUR)  # 03:40 -> 02:40
    assert starts(scheduler, schedule, clock, until=clock.wall + 2 * HOUR, step=60) == []
    assert local(scheduler.next_start["h"], key)[:16] == "2026-05-05 03:00"


def test_a_clock_set_days_back_follows_the_new_time() -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 12, 0, tzinfo=UTC)))
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("UTC"))
    schedule = Schedule(cron="0 3 * * *")
    scheduler.due({"h": schedule})
    clock.jump_wall(-3 * DAY)
    clock.advance(1)
    scheduler.due({"h": schedule})
    assert local(scheduler.next_start["h"], "UTC") == "2026-05-02 03:00:00+0000"  # not 2026-05-05


# -- bookkeeping -----------------------------------------------------------------------------------------


def test_a_changed_schedule_is_recomputed_and_a_removed_one_forgotten() -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 12, 0, tzinfo=UTC)))
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("UTC"))
    scheduler.due({"a": Schedule(cron="0 3 * * *"), "b": Schedule(cron="0 * * * *")})
    assert local(scheduler.next_start["a"], "UTC") == "2026-05-05 03:00:00+0000"
    scheduler.due({"a": Schedule(cron="0 3 * * *", time_zone="Asia/Kolkata")})
    assert local(scheduler.next_start["a"], "Asia/Kolkata") == "2026-05-05 03:00:00+0530"
    assert "b" not in scheduler.next_start


def test_a_schedule_that_never_matches_is_logged_and_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(wall=ts(datetime(2026, 5, 4, 12, 0, tzinfo=UTC)))
    scheduler = Scheduler(clock=clock, server_zone=NamedZone("UTC"))
    schedules = {"never": Schedule(cron="0 0 30 2 *"), "hourly": Schedule(cron="0 * * * *")}
    with caplog.at_level(logging.WARNING, logger="netdist.server.scheduler"):
        scheduler.due(schedules)
        clock.advance(HOUR)
        assert scheduler.due(schedules) == ["hourly"]
    assert "never" not in scheduler.next_start
    assert [r.getMessage() for r in caplog.records if "never" in r.getMessage()] == [
        "[never] schedule '0 0 30 2 *' (time-zone of the server): no next start: failed to find next date"
    ]


# -- random walks --------------------------------------------------------------------------------------


@st.composite
def walks(draw: st.DrawFn) -> tuple[str, str, str, float, list[float]]:
    key = draw(st.sampled_from(ZONES))
    expression = draw(st.sampled_from([e for e in EXPRESSIONS if len(e.split()) < 6]))
    anchors = [ts(c) for c in CHANGES.get(key, [])] or [ts(datetime(2026, 6, 1, tzinfo=UTC))]
    start = draw(st.sampled_from(anchors)) + draw(st.integers(-2 * DAY, DAY)) + draw(st.sampled_from([0, 0.5]))
    steps = draw(
        st.lists(
            st.integers(1, 3 * HOUR).map(float) | st.sampled_from([0.5, 59.5, 60.0, 3600.0]), min_size=1, max_size=25
        )
    )
    return key, draw(st.sampled_from(["server", "script"])), expression, start, steps


@settings(max_examples=80, deadline=None)
@given(walks())
def test_starts_match_the_cron_moments_crossed(walk: tuple[str, str, str, float, list[float]]) -> None:
    key, role, expression, start, steps = walk
    clock = ManualClock(wall=start)
    scheduler, schedule = scheduler_in(key, role, clock)
    schedule = Schedule(cron=expression, time_zone=schedule.time_zone)
    moments = oracle(expression, key, start, start + sum(steps) + 3 * DAY)
    scheduler.due({"h": schedule})
    for step in steps:
        before = clock.wall
        clock.advance(step)
        started = scheduler.due({"h": schedule}) == ["h"]
        crossed = bisect.bisect_right(moments, clock.wall) > bisect.bisect_right(moments, before)
        assert started == crossed, (local(before, key), local(clock.wall, key))
        assert scheduler.next_start["h"] == moments[bisect.bisect_right(moments, clock.wall)]
