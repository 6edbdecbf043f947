"""What the server counts as it works, for the metrics: plain numbers, moved once per batch.

The hot path (thousands of leases and results a second, in group-committed
batches) only adds to ints and bucket counts here; nothing in it knows
Prometheus. :mod:`netdist.server.metrics` reads these when it is scraped.

A :class:`Histogram` takes a lock per batch, so the store writer's thread may
observe into one while a scrape reads it; the :class:`DispatchTally` is
changed and read on the event loop only.
"""

from __future__ import annotations

import dataclasses
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence

JOB_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
)
"""A job's run time as its worker reports it: a millisecond to four hours."""

LATENCY_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Dispatch latency and store commits: half a millisecond to a minute."""

BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
"""Operations in one group commit (the writer takes at most 512)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last is +Inf, the total count) and the sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


class Histogram:
    """Counts of observations per bucket (``value <= bound``), and their sum; thread-safe."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must rise strictly: {bounds}")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect_left(self.bounds, value)] += 1
            self._sum += value

    def observe_many(self, values: Iterable[float]) -> None:
        """A batch of observations under one lock."""
        bounds, counts, total = self.bounds, self._counts, 0.0
        with self._lock:
            for value in values:
                counts[bisect_left(bounds, value)] += 1
                total += value
            self._sum += total

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        running, cumulative = 0, []
        for n in counts:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), total)


@dataclasses.dataclass(slots=True)
class DispatchTally:
    """The dispatcher's counts since the server started (event loop only)."""

    leases: int = 0
    """Leases committed and sent to workers."""
    results: Counter[str] = dataclasses.field(default_factory=Counter)
    """Results stored, by outcome: ``succeeded`` or ``failed`` (an error result, retried or final)."""
    refused: Counter[str] = dataclasses.field(default_factory=Counter)
    """Results refused by fencing, by ack outcome (stale, unknown, duplicate)."""
    job_seconds: Histogram = dataclasses.field(default_factory=lambda: Histogram(JOB_SECONDS_BUCKETS))
    """Run time of each stored result, as its worker reported it."""
    dispatch_seconds: Histogram = dataclasses.field(default_factory=lambda: Histogram(LATENCY_SECONDS_BUCKETS))
    """From the lease (the dispatcher picked the job for a worker) to its start on the worker: the worker's
    report that it started, or for a job that ended before that report went out, the result's arrival less
    the job's reported run time."""
