"""The clock seam: server logic reads time only through a ``Clock``, so tests can turn it.

Wall time (``time``) is for what people read and for calendars (cron, idle
windows, the daily budget); it may jump when an operator or NTP sets it.
Monotonic time (``monotonic``) never jumps and is for deadlines and intervals
(job timeouts, heartbeats, reconnect grace).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
