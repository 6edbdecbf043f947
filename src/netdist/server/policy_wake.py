"""When the dispatcher must pick again although nothing happened: a rule that reads the clock changed
its answer (an idle window ended, a new day started the daily budgets).

Every other reason to pick is an event (a worker's room, a job, a result) that kicks the dispatcher;
the clock is not one. Without this, jobs held back by an idle window stayed put after it ended until
some unrelated event came. The timer loop asks :meth:`PolicyWake.due` at every tick; it answers from
a wall-clock instant it computed beforehand (:func:`netdist.server.policy.next_change` over the
running handlers), so a tick costs two clock reads.

Clocks. The rules read wall time, so the instant is one of wall time: when the wall clock reaches
it, by running or by a jump forward, the dispatcher picks. A jump (wall time moving away from
monotonic time by more than JUMP_TOLERANCE_SECONDS between two ticks; a backward one may leave a
window, or put the instant a day away) makes it pick once and compute the instant again from the new
time. And whatever the clocks and zones do, it computes again and picks every
POLICY_RECHECK_SECONDS while some running handler has such a rule: a late wake is bounded, and no
state makes it pick more often than once per instant, jump or recheck.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from netdist.server import policy
from netdist.server.clock import Clock
from netdist.server.lease_model import HandlerQueue

POLICY_RECHECK_SECONDS = 30.0
"""At most this long between two picks while a running handler has an idle window or a daily budget."""
JUMP_TOLERANCE_SECONDS = 1.0
"""Wall time that drifts less than this from monotonic time between two ticks has not jumped."""


class PolicyWake:
    def __init__(self, *, clock: Clock, recheck_seconds: float = POLICY_RECHECK_SECONDS) -> None:
        self._clock = clock
        self._recheck_seconds = recheck_seconds
        self._at: float | None = None  # wall time of the next change; None: no running handler has such a rule
        self._timed = False  # whether some running handler has an idle window or a daily budget
        self._computed = -math.inf  # monotonic time of the last computation
        self._previous: tuple[float, float] | None = None  # (wall, monotonic) at the previous tick
        self._stale = True

    @property
    def next_at(self) -> float | None:
        """The wall-clock instant of the next wake computed, if any (for tests and logs)."""
        return self._at

    def changed(self) -> None:
        """The running handlers or their settings changed: compute the instant again at the next tick."""
        self._stale = True

    def due(self, queues: Iterable[HandlerQueue]) -> bool:
        """Whether the dispatcher should pick now; ``queues``: the lease table's handlers (read only
        when the instant is computed again)."""
        now, mono = self._clock.time(), self._clock.monotonic()
        previous, self._previous = self._previous, (now, mono)
        jumped = previous is not None and abs((now - previous[0]) - (mono - previous[1])) > JUMP_TOLERANCE_SECONDS
        reached = self._at is not None and now >= self._at
        recheck = mono - self._computed >= self._recheck_seconds
        if not (reached or jumped or recheck or self._stale):
            return False
        timed = self._timed
        self._compute(queues, now, mono)
        return reached or ((jumped or recheck) and (timed or self._timed))

    def _compute(self, queues: Iterable[HandlerQueue], now: float, mono: float) -> None:
        active = [q.settings for q in queues if q.active]
        self._timed = any(s.idle_time is not None or s.max_time_per_client_per_day_seconds is not None for s in active)
        found = (policy.next_change(s, now) for s in active)
        self._at = min((t for t in found if t is not None), default=None)
        self._computed = mono
        self._stale = False
