"""A handler's own job run time bounds how many of its jobs a worker holds beyond its slots.

Seen from outside (an operator's walk-through, 2 slots): after a job script of short jobs, a worker took
78 (another, 273) five-second jobs of the next one, its window sized by the short ones. Those jobs sat
there for minutes, a pause let them run for 40 s more, and a worker that joined later got none of them.
"""

from __future__ import annotations

from collections import Counter

from netdist.jobscript import JobSettings
from netdist.server.lease_model import MAX_PREFETCH, HandlerSpec, ReadyJob, ResultIn, WorkerInfo
from netdist.server.lease_picking import RUN_JOBS
from netdist.server.leases import LeaseTable
from tests.clock import ManualClock


def add_handler(table: LeaseTable, handler_id: str, first_id: int, jobs: int) -> None:
    settings = JobSettings(package="p", handler="H", job=handler_id)
    spec = HandlerSpec(
        handler_id=handler_id, job_name=handler_id, script_sha256="0" * 64, environment=(), settings=settings
    )
    table.add_handler(spec, counts={}, streak=0, active=True)
    table.enqueued(handler_id, jobs)
    table.refilled(handler_id, [ReadyJob(i, 0, 0, b"{}") for i in range(first_id, first_id + jobs)], more=False)


def test_a_window_sized_by_short_jobs_takes_no_more_than_its_slots_of_long_ones() -> None:
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    add_handler(table, "slow", 1, 100)
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=2), [])
    table.set_capacity("w", 2 + MAX_PREFETCH)
    table.workers["w"].ewma_seconds = 0.0001  # it ran short jobs before: a window of 1,000 by its own average

    first = table.pick()
    assert len(first) == 2  # its slots: how long these jobs take is not known yet
    table.leases_stored(first, {x.job_id for x in first})
    _, accepted, _ = table.settle("w", [ResultIn(x.job_id, x.lease_no, "null", None, 5.0) for x in first])
    table.settled(accepted, {s.result.job_id for s in accepted})
    assert table.handlers["slow"].ewma_seconds == 5.0
    again = table.pick()
    assert len(again) == 2  # 5 s a job: 50 ms of them is none beyond the slots


def test_short_jobs_of_one_handler_fill_the_window_and_long_ones_of_another_only_the_slots() -> None:
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    add_handler(table, "fast", 1, 500)
    add_handler(table, "slow", 1001, 500)
    table.handlers["fast"].ewma_seconds = 0.0001
    table.handlers["slow"].ewma_seconds = 5.0
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=2), [])
    table.set_capacity("w", 2 + MAX_PREFETCH)
    table.workers["w"].ewma_seconds = 0.0001

    picked = Counter(x.handler_id for x in table.pick())
    assert picked["slow"] <= 2 and picked["fast"] >= 498  # taking turns, the slow ones stop at the slots


def test_the_first_handler_whose_run_time_is_known_leaves_the_others_their_part_of_the_window() -> None:
    """Seen from outside (``bench/scale.py handlers``, 100 handlers started together, then 2 workers): the
    first two handlers whose jobs ran took both windows, 6,000 jobs each, and then sat out for seconds
    while the others caught up on their turns: one share of 0.0 of an equal one over the window where all
    ran."""
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    for n in range(4):
        add_handler(table, f"h{n}", 1 + 10_000 * n, 5_000)
    table.handlers["h0"].ewma_seconds = 0.0  # its first job ran (too short to time); the others' not yet
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=1), [])
    table.set_capacity("w", 1 + MAX_PREFETCH)
    table.workers["w"].ewma_seconds = 0.0  # a window of MAX_PREFETCH beyond its slot, for these jobs too

    picked = Counter(x.handler_id for x in table.pick())
    window = 1 + MAX_PREFETCH
    assert picked["h0"] <= -(-window // 4) + 1  # a quarter of the window (and maybe the free slot's job)
    assert all(picked[f"h{n}"] <= 1 for n in (1, 2, 3))  # no prefetch before their run time is known

    for n in (1, 2, 3):  # once theirs are known too, the window fills by turns
        table.handlers[f"h{n}"].ewma_seconds = 0.0
    picked = Counter(x.handler_id for x in table.pick())
    assert sum(picked.values()) > window // 2
    assert max(picked.values()) - min(picked[f"h{n}"] for n in range(4)) <= window // 4


def test_a_handler_whose_run_time_becomes_known_takes_turns_from_there_and_does_not_catch_up() -> None:
    """Seen from outside (``bench/scale.py handlers``, 100 handlers started together, then 2 workers): the
    last handlers whose first jobs ran (2-3 s after the first ones, their slots only until then) then took
    the workers until their pass values caught up, and the first ones sat out: shares 0.84-1.08 of an
    equal one over the window where all ran."""
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    add_handler(table, "early", 1, 50_000)
    add_handler(table, "late", 100_001, 50_000)
    table.handlers["early"].ewma_seconds = 0.0
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=1), [])
    table.set_capacity("w", 1 + MAX_PREFETCH)
    table.workers["w"].ewma_seconds = 0.0
    window = 1 + MAX_PREFETCH

    for _ in range(4):  # "late"'s first job waits its turn behind windows of "early"'s
        first = table.pick()
        table.leases_stored(first, {x.job_id for x in first})
        done = [x for x in first if x.handler_id == "early"]
        _, accepted, _ = table.settle("w", [ResultIn(x.job_id, x.lease_no, "null", None, 0.0) for x in done])
        table.settled(accepted, {s.result.job_id for s in accepted})
    assert table.handlers["late"].ewma_seconds is None
    waiting = [x for x in table.leases.values() if x.handler_id == "late"]
    assert len(waiting) == 1

    _, accepted, _ = table.settle("w", [ResultIn(waiting[0].job_id, waiting[0].lease_no, "null", None, 0.0)])
    table.settled(accepted, {s.result.job_id for s in accepted})
    picked = Counter(x.handler_id for x in table.pick())
    assert sum(picked.values()) == window
    assert abs(picked["late"] - picked["early"]) <= 2 * RUN_JOBS  # taking turns, not the whole window
