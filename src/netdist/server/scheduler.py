"""Cron schedules: when each handler instance starts next, on one injected clock, in explicit zones.

Zone. A schedule is read in its job script's ``time-zone``; without one, in the zone
of the server process: the zone its C library uses for local time (``TZ`` if set,
else ``/etc/localtime``), asked per instant (``time.localtime(t).tm_gmtoff``), so its
daylight-saving rules apply. croniter is only asked about naive wall times (calendar
arithmetic, which it does well); this module maps wall times to instants itself.
Handing croniter a naive local time made it read that time as UTC (a server under
``TZ=America/New_York`` computed its next start five hours in the past), and
croniter 7 given aware datetimes starts a daily ``30 2 * * *`` twice on a
fall-back day.

Daylight saving, as classic cron (Vixie cron, cronie) does it:

- A *fixed-hour* schedule, whose hour field names hours (``30 2 * * *``,
  ``0 8,20 * * *``, ``@daily``), starts once per matching wall time: in an hour
  that a fall-back change repeats, at its first occurrence only; a wall time that
  a spring-forward change skips starts at the instant of the change (several
  skipped moments make one start).
- An *interval* schedule, whose hour field is ``*``, a range or a step
  (``0 * * * *``, ``*/15 8-18 * * 1-5``, ``* * * * * */5``), follows real time: it
  starts at every instant whose wall time matches, so in both passes of a repeated
  hour and not in a skipped one; an hourly schedule starts every 60 minutes right
  across both changes.

Clock jumps. Wall time (``Clock.time``) may jump when NTP or an operator sets the
clock; the monotonic clock does not. A pass that sees the wall clock move more
than ``JUMP_TOLERANCE_SECONDS`` away from the monotonic clock since the previous
pass treats it as a jump:

- Forward: nothing special. A due start fires once however many moments were
  jumped over (as after a busy or suspended server), and the next start is
  computed from the new time: no burst.
- Backward: an interval schedule recomputes its next start from the new time, so
  it does not wait out the jump (the moment it last started for is never the
  next one). A fixed-hour schedule keeps its next start, so a moment it already
  started for does not start again (a daily job does not run twice because the
  clock was set back), unless the jump is more than ``FOLLOW_NEW_TIME_SECONDS``:
  then the clock was set, not corrected, and it recomputes from the new time too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zoneinfo
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from croniter import croniter

from netdist.server.clock import Clock

log = logging.getLogger("netdist.server.scheduler")

JUMP_TOLERANCE_SECONDS = 1.0
"""A wall clock that drifts less than this from the monotonic clock between two passes has not jumped."""
FOLLOW_NEW_TIME_SECONDS = 3 * 3600
"""A backward jump beyond this sets the clock (cron(8)'s threshold): fixed-hour schedules follow it."""
_PROBE_SECONDS = 6 * 3600  # no zone changes its UTC offset twice within this
_LARGEST_CHANGE_SECONDS = 3 * 3600  # no offset change is larger (the largest in use, Antarctica/Troll's, is 2 h)
_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001  (naive on purpose: the origin of wall-clock arithmetic in a zone)


class Zone(Protocol):
    def offset(self, at: int) -> int:
        """Seconds east of UTC at the instant ``at`` (Unix seconds)."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class NamedZone:
    """An IANA zone (a job script's ``time-zone``)."""

    key: str

    def offset(self, at: int) -> int:
        delta = datetime.fromtimestamp(at, zoneinfo.ZoneInfo(self.key)).utcoffset()
        assert delta is not None
        return int(delta.total_seconds())


class ServerZone:
    """The zone of the server process, as its C library sees it (``TZ``, else ``/etc/localtime``)."""

    def offset(self, at: int) -> int:
        return time.localtime(at).tm_gmtoff

    def __repr__(self) -> str:
        return f"ServerZone({'/'.join(time.tzname)})"


SERVER_ZONE: Zone = ServerZone()


def is_fixed_hour(expression: str) -> bool:
    """Whether the hour field names hours (``3``, ``2,14``) rather than ``*``, a range or a step."""
    if expression.startswith("@"):
        return expression.lower() != "@hourly"
    hour = expression.split()[1]
    return all(part.isdigit() for part in hour.split(","))


class CronRule:
    """One cron expression read in one zone: the start moments it defines."""

    def __init__(self, expression: str, zone: Zone) -> None:
        self.expression = expression
        self.zone = zone
        self.fixed_hour = is_fixed_hour(expression)
        self._cron = croniter(expression, _EPOCH, ret_type=datetime)

    def next_after(self, after: float) -> int:
        """The first start moment (Unix seconds) strictly after ``after``."""
        start = math.floor(after) + 1
        while True:  # each turn moves ``start`` on: to a change of offset, or past a repeated hour
            off = self.zone.offset(start)
            before = self.zone.offset(start - 1)
            if self.fixed_hour and before < off and self._match_from(start + before) < start + off:
                return start  # the wall times skipped at ``start`` hold a moment: it starts now
            wall = self._match_from(start + off)
            moment = wall - off
            change = self._offset_change(start, moment, off)
            if change is not None:
                start = change
                continue
            repeat_end = self._repeat_end(wall, moment) if self.fixed_hour else None
            if repeat_end is None:
                return moment
            start = repeat_end  # its first occurrence came due before ``after``

    def _match_from(self, wall: int) -> int:
        """The first matching wall time (seconds on a naive calendar) at or after ``wall``."""
        self._cron.set_current(_EPOCH + timedelta(seconds=wall - 1))
        found: datetime = self._cron.get_next(datetime)
        return (found - _EPOCH) // timedelta(seconds=1)

    def _offset_change(self, start: int, end: int, off: int) -> int | None:
        """The first instant in (start, end] whose offset is not ``off``, if any."""
        low = start
        while low < end:
            high = min(low + _PROBE_SECONDS, end)
            if self.zone.offset(high) != off:
                while high - low > 1:
                    mid = (low + high) // 2
                    if self.zone.offset(mid) == off:
                        low = mid
                    else:
                        high = mid
                return high
            low = high
        return None

    def _repeat_end(self, wall: int, moment: int) -> int | None:
        """If the wall time of ``moment`` happened before (a repeated hour), the instant the repeat ends."""
        earlier_off = self.zone.offset(moment - _LARGEST_CHANGE_SECONDS)
        first = wall - earlier_off
        if first >= moment or self.zone.offset(first) != earlier_off:
            return None
        change = self._offset_change(first, moment, earlier_off)
        assert change is not None
        return change + earlier_off - self.zone.offset(moment)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A job script's ``schedule`` and ``time-zone``."""

    cron: str
    time_zone: str | None = None


@dataclasses.dataclass(slots=True)
class _Entry:
    schedule: Schedule
    rule: CronRule | None  # None: the schedule cannot be computed (logged once)
    due: int | None = None
    last: int | None = None  # the last moment that came due


class Scheduler:
    """Which handler instances are due to start, pass after pass.

    ``next_start`` maps each handler id to its next start (Unix seconds), for
    display; the scheduler owns it and keeps it in step.
    """

    def __init__(self, *, clock: Clock, server_zone: Zone = SERVER_ZONE) -> None:
        self.clock = clock
        self.server_zone = server_zone
        self.next_start: dict[str, float] = {}
        self._entries: dict[str, _Entry] = {}
        self._previous: tuple[float, float] | None = None  # (wall, monotonic) at the previous pass

    def due(self, schedules: Mapping[str, Schedule]) -> list[str]:
        """The handlers whose start is due now, each once; forgets handlers not in ``schedules``."""
        now = self.clock.time()
        jump = self._wall_jump(now)
        for handler_id in self._entries.keys() - schedules.keys():
            del self._entries[handler_id]
            self.next_start.pop(handler_id, None)
        started = []
        for handler_id, schedule in schedules.items():
            entry = self._entries.get(handler_id)
            if entry is None or entry.schedule != schedule:
                entry = self._entries[handler_id] = self._new_entry(handler_id, schedule)
                self._advance(handler_id, entry, now)
            elif jump < -JUMP_TOLERANCE_SECONDS:
                self._after_backward_jump(handler_id, entry, now, -jump)
            if entry.due is not None and now >= entry.due:
                entry.last = entry.due
                self._advance(handler_id, entry, now)
                started.append(handler_id)
        return started

    def _wall_jump(self, now: float) -> float:
        """How far the wall clock moved beyond the monotonic clock since the previous pass."""
        mono = self.clock.monotonic()
        previous, self._previous = self._previous, (now, mono)
        if previous is None:
            return 0.0
        return (now - previous[0]) - (mono - previous[1])

    def _new_entry(self, handler_id: str, schedule: Schedule) -> _Entry:
        try:
            zone = NamedZone(schedule.time_zone) if schedule.time_zone else self.server_zone
            return _Entry(schedule=schedule, rule=CronRule(schedule.cron, zone))
        except Exception as exc:  # croniter and zoneinfo raise several kinds; one bad schedule must not stop the others
            return self._broken(handler_id, _Entry(schedule=schedule, rule=None), exc)

    def _advance(self, handler_id: str, entry: _Entry, after: float) -> None:
        """Set the entry's next start to the first moment after ``after`` (never the moment last due)."""
        if entry.rule is None:
            return
        try:
            due = entry.rule.next_after(after)
            if due == entry.last:
                due = entry.rule.next_after(due)
        except Exception as exc:  # e.g. croniter finds no match within its horizon
            self._broken(handler_id, entry, exc)
            return
        entry.due = due
        self.next_start[handler_id] = float(due)

    def _broken(self, handler_id: str, entry: _Entry, exc: Exception) -> _Entry:
        log.warning(
            "[%s] schedule %r (time-zone %s): no next start: %s",
            handler_id,
            entry.schedule.cron,
            entry.schedule.time_zone or "of the server",
            exc,
        )
        entry.rule = entry.due = None
        self.next_start.pop(handler_id, None)
        return entry

    def _after_backward_jump(self, handler_id: str, entry: _Entry, now: float, back: float) -> None:
        if entry.rule is None or (entry.rule.fixed_hour and back <= FOLLOW_NEW_TIME_SECONDS):
            return  # a fixed-hour schedule keeps its next start: no moment starts twice
        self._advance(handler_id, entry, now)
