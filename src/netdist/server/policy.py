"""Which handler may give a job to which worker right now: the settings' rules."""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Protocol

from netdist.jobscript import ClientSelector, JobSettings
from netdist.server.clock import SYSTEM_CLOCK, Clock
from netdist.server.states import JobStatus


class HandlerView(Protocol):
    """What the rules read of a handler (the lease table's HandlerQueue)."""

    @property
    def handler_id(self) -> str: ...
    @property
    def settings(self) -> JobSettings: ...
    @property
    def counts(self) -> Mapping[str, int]: ...


class WorkerView(Protocol):
    """What the rules read of a worker (the lease table's WorkerState)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def per_handler(self) -> Mapping[str, int]: ...


class DailyUsage:
    """Seconds of job run time per (worker, handler) per calendar day (the server's local time)."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock  # the seam: tests turn the day
        self._seconds: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._day = date.min
        self._day_span = (0.0, 0.0)  # [start, end) of the day in wall time: the date is looked up once a day
        self._roll()

    def _roll(self) -> None:
        now = self._clock.time()
        start, end = self._day_span
        if start <= now < end:
            return
        today = datetime.fromtimestamp(now).astimezone().date()
        midnight = datetime.combine(today, datetime.min.time()).astimezone()
        self._day_span = (
            midnight.timestamp(),
            datetime.combine(today + timedelta(days=1), datetime.min.time()).astimezone().timestamp(),
        )
        if today != self._day:
            self._day, self._seconds = today, defaultdict(float)

    def charge(self, worker_id: str, handler_id: str, seconds: float) -> None:
        self._roll()
        self._seconds[(worker_id, handler_id)] += max(0.0, seconds)

    def used(self, worker_id: str, handler_id: str) -> float:
        self._roll()
        return self._seconds.get((worker_id, handler_id), 0.0)

    def day_start(self) -> float:
        """Unix time of today's midnight (server time)."""
        self._roll()
        return datetime.combine(self._day, datetime.min.time()).astimezone().timestamp()

    def seed(self, seconds: Mapping[tuple[str, str], float]) -> None:
        """Today's usage as read back from the stored results (after a restart)."""
        self._roll()
        for key, value in seconds.items():
            self._seconds[key] += value


def client_allowed(settings: JobSettings, worker: WorkerView) -> bool:
    """Allowed selectors take precedence over denied ones, as in NetDist."""

    def matches(selectors: tuple[ClientSelector, ...]) -> bool:
        return any(
            s.matches(worker_id=worker.worker_id, worker_name=worker.name, labels=worker.labels) for s in selectors
        )

    if settings.clients_allowed and matches(settings.clients_allowed):
        return True
    if settings.clients_denied and matches(settings.clients_denied):
        return False
    return not settings.clients_allowed


def in_idle_window(settings: JobSettings, now: float) -> bool:
    if settings.idle_time is None:
        return False
    zone = zoneinfo.ZoneInfo(settings.time_zone) if settings.time_zone else None
    moment = datetime.fromtimestamp(now, zone).time()
    return settings.idle_time.contains(moment)


def idle_window_end(settings: JobSettings, now: float) -> float | None:
    """The first instant after ``now`` (wall time) at which the handler's idle window ends, in its zone;
    None without a window. An end that daylight saving skips or repeats comes out an hour off at worst:
    the dispatcher looks again at least every POLICY_RECHECK_SECONDS anyway (server/policy_wake.py)."""
    window = settings.idle_time
    if window is None:
        return None
    zone = zoneinfo.ZoneInfo(settings.time_zone) if settings.time_zone else None
    today = datetime.fromtimestamp(now, zone).date()
    for day in (today - timedelta(days=1), today, today + timedelta(days=1), today + timedelta(days=2)):
        end = _wall_instant(day, window.end, zone)
        if end > now:
            return end
    return None


def next_day_start(now: float) -> float:
    """The instant of the next midnight in the server's zone after ``now``: daily budgets start again then."""
    tomorrow = datetime.fromtimestamp(now).astimezone().date() + timedelta(days=1)
    return _wall_instant(tomorrow, datetime.min.time(), None)


def next_change(settings: JobSettings, now: float) -> float | None:
    """The first instant after ``now`` at which the rules that read the clock may let the handler give
    jobs it did not give before: its idle window ends, or a new day starts its workers' daily budget."""
    found = [idle_window_end(settings, now)]
    if settings.max_time_per_client_per_day_seconds is not None:
        found.append(next_day_start(now))
    return min((t for t in found if t is not None and t > now), default=None)


def _wall_instant(day: date, moment: time, zone: zoneinfo.ZoneInfo | None) -> float:
    """Unix time of ``moment`` on ``day`` in ``zone`` (None: the server's zone)."""
    if zone is None:
        return datetime.combine(day, moment).astimezone().timestamp()
    return datetime.combine(day, moment, tzinfo=zone).timestamp()


def may_serve(handler: HandlerView, worker: WorkerView, now: float, usage: DailyUsage) -> bool:
    """Whether ``handler`` may give ``worker`` one more job at wall time ``now``, by the rules whose
    answer changes while neither the settings nor the worker's identity do. The others,
    ``client_allowed`` and the platform, the lease table asks once per worker and handler and keeps
    (``LeaseBook.servable``)."""
    s = handler.settings
    if s.max_parallel_jobs is not None and handler.counts.get(JobStatus.LEASED, 0) >= s.max_parallel_jobs:
        return False
    if s.max_jobs_per_client is not None and worker.per_handler.get(handler.handler_id, 0) >= s.max_jobs_per_client:
        return False
    if s.max_time_per_client_per_day_seconds is not None and (
        usage.used(worker.worker_id, handler.handler_id) >= s.max_time_per_client_per_day_seconds
    ):
        return False
    return not in_idle_window(s, now)
