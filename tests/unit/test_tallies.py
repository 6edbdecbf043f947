"""The plain tallies behind the metrics: histogram buckets as Prometheus reads them."""

from __future__ import annotations

import threading

import pytest

from netdist.server.tallies import Histogram


def test_a_value_on_a_bound_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    h = Histogram((0.1, 1.0, 10.0))
    h.observe(0.1)
    h.observe_many([0.05, 0.5, 1.0, 11.0, 10.0])
    snap = h.snapshot()
    assert snap.bounds == (0.1, 1.0, 10.0)
    assert snap.cumulative == (2, 4, 5, 6)  # le 0.1, le 1, le 10, +Inf
    assert snap.count == 6
    assert snap.sum == pytest.approx(22.65)


def test_an_empty_histogram_has_zero_everywhere() -> None:
    snap = Histogram((1.0,)).snapshot()
    assert (snap.cumulative, snap.sum, snap.count) == ((0, 0), 0.0, 0)


@pytest.mark.parametrize("bounds", [(1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_rise(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="rise strictly"):
        Histogram(bounds)


def test_observations_from_several_threads_are_all_counted() -> None:
    h = Histogram((0.5,))

    def observe() -> None:
        for _ in range(200):
            h.observe_many([0.25, 1.0])

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.snapshot().cumulative == (800, 1600)
