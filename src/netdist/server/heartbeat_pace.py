"""How often the connected workers are asked to send a heartbeat.

Every heartbeat is a message the server's event loop reads, so a fixed interval
makes their cost grow with the fleet: 10,000 idle streams at 4 s were 2,500
messages a second, and two real workers beside them ran at 0.84 of their rate
alone (bench/idle_streams.py). As Nomad does with its heartbeat TTL, the
interval is stretched so that all streams together send at most
``max_per_second``: ``max(base, streams / max_per_second)``.

A new stream is told the interval in its Welcome. Once it has doubled since the
streams were last told, those told less hear the new one (a StreamSettings
message): each such round costs a message per stream, but takes as many new
streams again to come, so it costs O(1) per stream over time. A stream keeps its
longer interval when others leave (new streams get the shorter one); that only
makes a stream that stops talking take longer to notice, and gRPC's keepalive
(5 s pings) still ends a stream whose connection died within about 10 s.
"""

from __future__ import annotations

SILENT_INTERVALS = 3
"""A connected worker that sends nothing for this many of its intervals is gone."""
STRETCH_FACTOR = 2.0
"""The interval has to grow by this much before the open streams are told."""


class HeartbeatPace:
    def __init__(self, base_seconds: float, max_per_second: float) -> None:
        if not base_seconds > 0 or not max_per_second > 0:
            raise ValueError("the heartbeat interval and the heartbeat rate must be positive")
        self.base_seconds = base_seconds
        self.max_per_second = max_per_second
        self._told = base_seconds  # what the newest streams were told

    def interval(self, streams: int) -> float:
        """The interval that keeps ``streams`` streams at or under the rate."""
        return max(self.base_seconds, streams / self.max_per_second)

    def joined(self, streams: int) -> tuple[float, float | None]:
        """A stream joined, making ``streams`` in all: the interval to tell it, and the interval to tell
        the open streams that were told less (None: they keep theirs)."""
        interval = self.interval(streams)
        if interval >= self._told * STRETCH_FACTOR:
            self._told = interval
            return interval, interval
        self._told = min(self._told, interval)
        return interval, None
