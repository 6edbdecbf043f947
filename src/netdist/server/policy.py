"""Which handler may give a job to which worker right now: the settings' rules."""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import date, datetime

from netdist.jobscript import JobSettings
from netdist.server.lease import HandlerSlot, Session
from netdist.server.states import JobStatus


class DailyUsage:
    """Seconds of job run time per (worker, handler) per calendar day (server time)."""

    def __init__(self, *, today: Callable[[], date] = date.today) -> None:
        self._today = today  # the clock seam: tests turn the day
        self._day = today()
        self._seconds: defaultdict[tuple[str, str], float] = defaultdict(float)

    def _roll(self) -> None:
        today = self._today()
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
        return datetime.combine(self._day, datetime.min.time()).timestamp()

    def seed(self, seconds: Mapping[tuple[str, str], float]) -> None:
        """Today's usage as read back from the stored results (after a restart)."""
        self._roll()
        for key, value in seconds.items():
            self._seconds[key] += value


def client_allowed(settings: JobSettings, session: Session) -> bool:
    """Allowed selectors take precedence over denied ones, as in NetDist."""
    def matches(selectors: tuple[object, ...]) -> bool:
        return any(
            s.matches(worker_id=session.worker_id, worker_name=session.name, labels=session.labels)  # type: ignore[attr-defined]
            for s in selectors
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


def may_serve(slot: HandlerSlot, session: Session, now: float, usage: DailyUsage) -> bool:
    s = slot.settings
    if s.max_parallel_jobs is not None and slot.counts[JobStatus.LEASED] >= s.max_parallel_jobs:
        return False
    if s.max_jobs_per_client is not None and session.per_handler[slot.handler_id] >= s.max_jobs_per_client:
        return False
    if s.max_time_per_client_per_day_seconds is not None and (
        usage.used(session.worker_id, slot.handler_id) >= s.max_time_per_client_per_day_seconds
    ):
        return False
    if in_idle_window(s, now):
        return False
    return client_allowed(s, session)
