"""The capacity a worker asks for, and when it tells the server again."""

from __future__ import annotations

from netdist.worker.capacity import CapacityGauge, prefetch, wanted


def test_prefetch_is_about_50ms_of_work() -> None:
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=None) == 0
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=10.0) == 0
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.05) == 4
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.01) == 20
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.00001) == 256
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.0) == 256
    assert prefetch(slots=4, max_prefetch=0, ewma_seconds=0.001) == 0


def test_wanted_is_slots_plus_prefetch_and_zero_when_stopping() -> None:
    assert wanted(slots=4, max_prefetch=256, ewma_seconds=None, stopping=False) == 4
    assert wanted(slots=4, max_prefetch=256, ewma_seconds=0.01, stopping=False) == 24
    assert wanted(slots=4, max_prefetch=256, ewma_seconds=0.01, stopping=True) == 0
    assert wanted(slots=1, max_prefetch=0, ewma_seconds=0.0, stopping=False) == 1


def test_the_first_value_on_a_stream_is_always_sent() -> None:
    gauge = CapacityGauge(slots=4)
    assert gauge.update(4) == 4
    assert gauge.update(4) is None
    gauge.reset()  # a new stream
    assert gauge.update(4) == 4


def test_jitter_of_the_average_sends_nothing() -> None:
    gauge = CapacityGauge(slots=4)
    assert gauge.update(204) == 204
    for want in (200, 205, 199, 210, 180, 160):  # within a quarter of 200
        assert gauge.update(want) is None
    assert gauge.sent == 204
    assert gauge.update(150) == 150  # moved by more than a quarter
    assert gauge.update(190) is None  # 40 < (190 - 4) // 4
    assert gauge.update(250) == 250


def test_small_prefetch_changes_are_sent_one_by_one() -> None:
    gauge = CapacityGauge(slots=4)
    assert gauge.update(4) == 4  # before the first job finished
    assert gauge.update(5) == 5  # the first short job: one to prefetch
    assert gauge.update(6) == 6
    assert gauge.update(4) == 4  # jobs grew long: no prefetch any more


def test_stopping_and_resuming_always_go_out() -> None:
    gauge = CapacityGauge(slots=4)
    assert gauge.update(260) == 260
    assert gauge.update(0) == 0
    assert gauge.update(0) is None
    assert gauge.update(259) == 259  # from 0: always


def test_a_message_per_finished_job_is_avoided() -> None:
    """Simulate the average converging over many jobs: few messages, none per job."""
    gauge = CapacityGauge(slots=2)
    ewma: float | None = None
    first = gauge.update(wanted(slots=2, max_prefetch=256, ewma_seconds=ewma, stopping=False))
    assert first is not None
    sent = [first]
    for n in range(2000):
        duration = 0.001 + (n % 7) * 0.0001  # short jobs with some noise
        ewma = duration if ewma is None else ewma + 0.2 * (duration - ewma)
        want = wanted(slots=2, max_prefetch=256, ewma_seconds=ewma, stopping=False)
        if (value := gauge.update(want)) is not None:
            sent.append(value)
    assert sent[0] == 2
    assert 2 <= len(sent) <= 6
    assert sent[-1] == gauge.sent
    assert abs(want - sent[-1]) <= (max(want, sent[-1]) - 2) // 4
