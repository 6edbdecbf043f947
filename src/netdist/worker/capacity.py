"""How many leases the worker asks the server to keep in its hands.

The worker tells the server an absolute number, ``Capacity``: the most leases
it wants to hold at once, running, queued and on their way. That is its slots
plus a prefetch of about 50 ms of work by the running average of job durations
(none before the first job finished, none for jobs of 50 ms and more, at most
``--max-prefetch``), so short jobs never wait for a round trip and long ones
are never stranded behind a buffer. A stopping worker wants 0.

The average moves with every finished job, so the wanted number jitters; a
:class:`CapacityGauge` lets a new value through only when it differs from the
one last sent by a quarter of the prefetch (or goes to or from 0, or is the
first on a stream), so the worker sends a handful of Capacity messages, not
one per job. Pure: no stream, no clock.
"""

from __future__ import annotations

import math

PREFETCH_SECONDS = 0.05
"""Queue about this much work per slot beyond the slots."""
STEP_FRACTION = 4
"""A new capacity is sent once it moved by 1/STEP_FRACTION of the prefetch."""


def prefetch(*, slots: int, max_prefetch: int, ewma_seconds: float | None) -> int:
    """Jobs to hold beyond the slots: about 50 ms of queued work; none before a job finished."""
    if ewma_seconds is None:
        return 0
    if ewma_seconds <= 0:
        return max_prefetch
    return max(0, min(max_prefetch, math.floor(slots * PREFETCH_SECONDS / ewma_seconds)))


def wanted(*, slots: int, max_prefetch: int, ewma_seconds: float | None, stopping: bool) -> int:
    """The capacity to ask for: slots plus prefetch, or 0 when stopping."""
    if stopping:
        return 0
    return slots + prefetch(slots=slots, max_prefetch=max_prefetch, ewma_seconds=ewma_seconds)


class CapacityGauge:
    """Decides when the wanted capacity is worth a message on the current stream."""

    def __init__(self, *, slots: int) -> None:
        self.slots = slots
        self.sent: int | None = None
        """The capacity last sent on this stream; None before the first."""

    def reset(self) -> None:
        """A new stream: the server knows nothing yet, the next value goes out."""
        self.sent = None

    def update(self, want: int) -> int | None:
        """The capacity to send now, or None when the server's number is close enough."""
        sent = self.sent
        if sent == want:
            return None
        if sent is not None and want != 0 and sent != 0:
            step = max(1, (max(sent, want) - self.slots) // STEP_FRACTION)
            if abs(want - sent) < step:
                return None
        self.sent = want
        return want
