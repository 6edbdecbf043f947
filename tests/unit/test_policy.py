"""The dispatcher's rules, one setting at a time, with no server: pure functions of the settings."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from netdist import jobscript
from netdist.jobscript import ClientSelector, IdleWindow, JobSettings
from netdist.server import policy
from netdist.server.lease_model import (
    HandlerQueue,
    HandlerSpec,
    WorkerInfo,
    WorkerState,
)
from netdist.server.states import JobStatus
from tests.clock import ManualClock


def settings(**values: object) -> JobSettings:
    return JobSettings(package="p", handler="H", job="j", **values)  # type: ignore[arg-type]


def session(*, worker_id: str = "w-1", name: str = "lab-1", labels: dict[str, str] | None = None) -> WorkerState:
    return WorkerState(WorkerInfo(worker_id=worker_id, name=name, labels=labels or {}, slots=4))


def slot(s: JobSettings) -> HandlerQueue:
    return HandlerQueue(
        spec=HandlerSpec(handler_id="h", job_name="j", settings=s, script_sha256="x", environment=()), active=True
    )


def at(hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, 1, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        ("22:00-06:00", [time(22, 0), time(23, 59), time(0, 0), time(5, 59)], [time(6, 0), time(21, 59), time(12)]),
        ("23:30-00:15", [time(23, 30), time(0, 14)], [time(0, 15), time(23, 29)]),
        ("00:00-01:00", [time(0, 0), time(0, 59)], [time(1, 0), time(23, 59)]),
    ],
)
def test_idle_window_contains_across_midnight(window: str, inside: list[time], outside: list[time]) -> None:
    start, end = (time.fromisoformat(t) for t in window.split("-"))
    w = IdleWindow(start=start, end=end)
    assert [w.contains(t) for t in inside] == [True] * len(inside)
    assert [w.contains(t) for t in outside] == [False] * len(outside)
    assert str(w) == window


def test_idle_window_uses_the_time_zone_when_given() -> None:
    night = IdleWindow(start=time(22), end=time(6))
    zurich = settings(idle_time=night, time_zone="Europe/Zurich")  # UTC+1 in March
    assert policy.in_idle_window(zurich, at(21, 30))  # 22:30 in Zurich
    assert not policy.in_idle_window(zurich, at(5, 30))  # 06:30 in Zurich
    tokyo = settings(idle_time=night, time_zone="Asia/Tokyo")  # UTC+9
    assert policy.in_idle_window(tokyo, at(14))  # 23:00 in Tokyo
    assert not policy.in_idle_window(settings(), at(23))


def test_clients_allowed_takes_precedence_over_denied() -> None:
    lab, gpu, other = (
        session(),
        session(worker_id="w-2", name="box", labels={"gpu": "1"}),
        session(worker_id="w-3", name="home"),
    )
    both = settings(clients_allowed=(ClientSelector(id="w-1"),), clients_denied=(ClientSelector(name="^lab-"),))
    assert [policy.client_allowed(both, s) for s in (lab, gpu, other)] == [True, False, False]
    denied = settings(clients_denied=(ClientSelector(label="gpu"), ClientSelector(id="w-3")))
    assert [policy.client_allowed(denied, s) for s in (lab, gpu, other)] == [True, False, False]
    allowed = settings(clients_allowed=(ClientSelector(name="^lab-"), ClientSelector(label="gpu=1")))
    assert [policy.client_allowed(allowed, s) for s in (lab, gpu, other)] == [True, True, False]
    assert all(policy.client_allowed(settings(), s) for s in (lab, gpu, other))


def test_may_serve_limits() -> None:
    usage = policy.DailyUsage(clock=ManualClock())
    worker = session()
    parallel = slot(settings(max_parallel_jobs=2))
    parallel.counts[JobStatus.LEASED] = 1
    assert policy.may_serve(parallel, worker, at(12), usage)
    parallel.counts[JobStatus.LEASED] = 2
    assert not policy.may_serve(parallel, worker, at(12), usage)

    per_client = slot(settings(max_jobs_per_client=1))
    assert policy.may_serve(per_client, worker, at(12), usage)
    worker.per_handler["h"] = 1
    assert not policy.may_serve(per_client, worker, at(12), usage)
    assert policy.may_serve(per_client, session(worker_id="w-2"), at(12), usage)

    idle = slot(settings(idle_time=IdleWindow(start=time(22), end=time(6)), time_zone="UTC"))
    assert not policy.may_serve(idle, session(), at(23), usage)
    assert policy.may_serve(idle, session(), at(12), usage)


def test_daily_budget_per_worker_and_handler_resets_when_the_day_turns() -> None:
    clock = ManualClock(wall=datetime(2026, 3, 1, 12).astimezone().timestamp())
    usage = policy.DailyUsage(clock=clock)
    budget = slot(settings(max_time_per_client_per_day_seconds=10))
    worker = session()
    usage.charge("w-1", "h", 6)
    assert policy.may_serve(budget, worker, at(12), usage)
    usage.charge("w-1", "h", 4)
    usage.charge("w-1", "h", -3)  # a clock step back charges nothing
    assert usage.used("w-1", "h") == 10
    assert not policy.may_serve(budget, worker, at(12), usage)
    assert policy.may_serve(budget, session(worker_id="w-2"), at(12), usage)  # per worker
    clock.advance(24 * 3600)
    assert usage.used("w-1", "h") == 0 and policy.may_serve(budget, worker, at(12), usage)


def test_design_example_window_parses_to_the_same_window() -> None:
    parsed = jobscript.parse(
        '# /// script\n# [tool.netdist]\n# package = "p"\n# handler = "H"\n# job = "j"\n'
        '# idle-time = "22:00-06:00"\n# ///\ndef process(job_input, ctx):\n    return 1\n'
    )
    assert parsed.settings.idle_time == IdleWindow(start=time(22), end=time(6))
