"""When the dispatcher picks again with no event (server/policy_wake.py), and why a handler's jobs wait
(server/waiting.py): on a lease table and a clock turned by hand.

Seen from outside: an idle window ended at 22:38 while two workers sat idle, and the jobs stayed
available until an unrelated ``jobs add`` at 22:39:22; and ``handlers show`` said nothing of why.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from netdist.jobscript import ClientSelector, IdleWindow, JobSettings
from netdist.server import policy
from netdist.server.lease_model import HandlerSpec, ReadyJob, WorkerInfo
from netdist.server.leases import LeaseTable
from netdist.server.policy_wake import POLICY_RECHECK_SECONDS, PolicyWake
from netdist.server.waiting import waiting_reason
from tests.clock import ManualClock

WINDOW = IdleWindow(start=time(22, 0), end=time(22, 38))
STEP = 0.125  # a tick (the timer loop's is 0.1 s); exact in binary, so the rechecks fall on ticks


def utc(hour: int, minute: int = 0, second: int = 0, *, day: int = 6) -> float:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC).timestamp()


def settings(**values: object) -> JobSettings:
    return JobSettings(package="p", handler="H", job="h", **values)  # type: ignore[arg-type]


def table_with(s: JobSettings, clock: ManualClock, jobs: int = 5) -> LeaseTable:
    table = LeaseTable(clock=clock, reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    spec = HandlerSpec(handler_id="h", job_name="h", script_sha256="0" * 64, environment=(), settings=s)
    table.add_handler(spec, counts={}, streak=0, active=True)
    table.enqueued("h", jobs)
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in range(1, jobs + 1)], more=False)
    return table


def join(table: LeaseTable, worker_id: str, labels: dict[str, str] | None = None) -> None:
    table.connect(WorkerInfo(worker_id=worker_id, name=worker_id, labels=labels or {}, slots=1), [])
    table.set_capacity(worker_id, 1)


def ticks(wake: PolicyWake, table: LeaseTable, clock: ManualClock, count: int) -> list[bool]:
    """What ``due`` says at each of ``count`` ticks of the timer loop."""
    said = []
    for _ in range(count):
        clock.advance(STEP)
        said.append(wake.due(table.handlers.values()))
    return said


# -- the instants -------------------------------------------------------------------------------


def test_idle_window_end_is_the_next_end_in_the_handlers_zone() -> None:
    in_utc = settings(idle_time=WINDOW, time_zone="UTC")
    assert policy.idle_window_end(in_utc, utc(22, 36, 33)) == utc(22, 38)
    assert policy.idle_window_end(in_utc, utc(22, 38)) == utc(22, 38, day=7)  # strictly after
    night = settings(idle_time=IdleWindow(start=time(22), end=time(6)), time_zone="Asia/Tokyo")  # UTC+9
    assert policy.idle_window_end(night, utc(14)) == utc(21)  # 23:00 in Tokyo: ends 06:00 Tokyo, 21:00 UTC
    assert policy.idle_window_end(settings(), utc(12)) is None


def test_next_day_start_is_the_next_midnight_of_the_server() -> None:
    now = utc(22, 59, 30)
    start = policy.next_day_start(now)
    local = datetime.fromtimestamp(start).astimezone()
    assert now < start <= now + 25 * 3600 and (local.hour, local.minute) == (0, 0)
    assert local.date() == datetime.fromtimestamp(now).astimezone().date() + timedelta(days=1)


def test_next_change_is_the_earliest_of_the_handlers_rules() -> None:
    both = settings(idle_time=WINDOW, time_zone="UTC", max_time_per_client_per_day_seconds=60.0)
    now = utc(22, 36)
    assert policy.next_change(both, now) == min(utc(22, 38), policy.next_day_start(now))
    assert policy.next_change(settings(max_jobs_per_client=1), now) is None


# -- the wake ---------------------------------------------------------------------------------------


def test_the_dispatcher_picks_when_the_idle_window_ends_and_only_then() -> None:
    clock = ManualClock(wall=utc(22, 36, 33))
    table = table_with(settings(idle_time=WINDOW, time_zone="UTC"), clock)
    join(table, "a")
    join(table, "b")
    wake = PolicyWake(clock=clock)
    assert table.pick() == []  # inside the window
    wake.due(table.handlers.values())
    ticks = 0
    while clock.wall < utc(22, 38) - STEP:
        clock.advance(STEP)
        ticks += 1
        assert not wake.due(table.handlers.values()) or ticks % int(POLICY_RECHECK_SECONDS / STEP) == 0
    clock.advance(STEP)
    assert wake.due(table.handlers.values())  # the window ended: pick
    assert len(table.pick()) == 2
    clock.advance(STEP)
    assert not wake.due(table.handlers.values())  # once
    assert wake.next_at == utc(22, 38, day=7)


def test_a_wall_clock_jump_wakes_once_and_never_spins() -> None:
    clock = ManualClock(wall=utc(22, 20))
    table = table_with(settings(idle_time=WINDOW, time_zone="UTC"), clock)
    wake = PolicyWake(clock=clock)
    wake.due(table.handlers.values())
    clock.advance(STEP)
    assert not wake.due(table.handlers.values())
    clock.jump_wall(3600)  # forward past the end: at once
    clock.advance(STEP)
    assert wake.due(table.handlers.values())
    assert not any(ticks(wake, table, clock, 50))  # computed again from the new time: no spinning
    clock.jump_wall(-86400 - 3600)  # back to 22:20 a day before: the end is that day's, not the next one's
    clock.advance(STEP)
    assert wake.due(table.handlers.values())
    assert wake.next_at == utc(22, 38, day=5)
    clock.advance(STEP)
    assert not wake.due(table.handlers.values())


def test_a_recheck_bounds_a_late_wake_while_a_handler_has_timed_rules() -> None:
    clock = ManualClock(wall=utc(12))
    table = table_with(settings(idle_time=WINDOW, time_zone="UTC"), clock)
    wake = PolicyWake(clock=clock)
    wake.due(table.handlers.values())
    assert sum(ticks(wake, table, clock, int(3 * POLICY_RECHECK_SECONDS / STEP))) == 3
    plain = PolicyWake(clock=clock)  # no handler with such a rule: no pick at all
    table.handlers["h"].spec = HandlerSpec(
        handler_id="h", job_name="h", script_sha256="0" * 64, environment=(), settings=settings()
    )
    plain.due(table.handlers.values())
    clock.jump_wall(7200)
    assert not any(ticks(plain, table, clock, int(2 * POLICY_RECHECK_SECONDS / STEP)))


# -- why the jobs wait ------------------------------------------------------------------------------


def test_waiting_reasons() -> None:
    clock = ManualClock(wall=utc(22, 36, 33))
    idle = table_with(settings(idle_time=WINDOW, time_zone="UTC"), clock)
    assert waiting_reason(idle, "h", now=clock.wall) == "idle-time window until 22:38 (UTC)"
    assert waiting_reason(idle, "h", now=utc(22, 39)) == "no worker connected"

    tpu = table_with(settings(clients_allowed=(ClientSelector(label="tpu"),)), clock)
    join(tpu, "w1", {"cpu": "1"})
    join(tpu, "w2\x1b[2J")
    assert waiting_reason(tpu, "h", now=clock.wall) == (
        'no connected worker is allowed (clients-allowed = [{ label = "tpu" }]; '
        "2 connected: w1 [cpu=1], w2\x1b[2J [no labels])"
    )  # as sent: the CLI makes it printable
    join(tpu, "w3", {"tpu": "v4"})
    assert waiting_reason(tpu, "h", now=clock.wall) == ""

    capped = table_with(settings(max_time_per_client_per_day_seconds=60.0), clock)
    join(capped, "a")
    join(capped, "b")
    capped.usage.charge("a", "h", 61)
    assert waiting_reason(capped, "h", now=clock.wall) == ""  # b may still run them
    capped.usage.charge("b", "h", 60)
    assert waiting_reason(capped, "h", now=clock.wall) == (
        "every allowed worker reached max-time-per-client-per-day (until 00:00)"
    )
    capped.handlers["h"].active = False  # paused: it says so itself
    assert waiting_reason(capped, "h", now=clock.wall) == ""
