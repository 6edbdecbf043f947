"""Where the lease table puts a capped handler's jobs: on free slots, never waiting in a prefetch.

Seen from outside: with ``max-parallel-jobs = 3`` all three leases went to one
worker (one of them waiting at 0% behind its two slots) while another worker
sat idle, because the first worker's prefetch took the third place.
"""

from __future__ import annotations

import dataclasses

import pytest

from netdist.jobscript import ClientSelector, JobSettings
from netdist.server import lease_picking
from netdist.server.lease_model import HandlerSpec, ReadyJob, WorkerInfo
from netdist.server.leases import LeaseTable
from tests.clock import ManualClock


def table_with(settings: JobSettings, jobs: int) -> LeaseTable:
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    spec = HandlerSpec(handler_id="h", job_name="h", script_sha256="0" * 64, environment=(), settings=settings)
    table.add_handler(spec, counts={}, streak=0, active=True)
    table.enqueued("h", jobs)
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in range(1, jobs + 1)], more=False)
    return table


def join(table: LeaseTable, worker_id: str, slots: int) -> None:
    table.connect(WorkerInfo(worker_id=worker_id, name=worker_id, labels={}, slots=slots), [])
    table.set_capacity(worker_id, slots + 4)
    table.workers[worker_id].ewma_seconds = 0.01  # short jobs: the table would prefetch
    for queue in table.handlers.values():
        queue.ewma_seconds = 0.01


def test_a_capped_handler_leaves_its_last_place_for_a_free_slot_elsewhere() -> None:
    table = table_with(JobSettings(package="p", handler="H", job="h", max_parallel_jobs=3), jobs=10)
    join(table, "a", slots=2)
    first = table.pick()
    assert [x.worker_id for x in first] == ["a", "a"]  # its two slots, no prefetch
    table.leases_stored(first, {x.job_id for x in first})
    join(table, "b", slots=2)
    assert [x.worker_id for x in table.pick()] == ["b"]  # the third place goes to a free slot


def test_an_uncapped_handler_still_prefetches() -> None:
    table = table_with(JobSettings(package="p", handler="H", job="h"), jobs=10)
    join(table, "a", slots=2)
    assert len(table.pick()) > 2


def test_idle_workers_each_get_a_job_before_any_gets_a_second() -> None:
    table = table_with(JobSettings(package="p", handler="H", job="h", max_parallel_jobs=3), jobs=10)
    for name in ("a", "b", "c"):
        join(table, name, slots=2)
    assert sorted(x.worker_id for x in table.pick()) == ["a", "b", "c"]


def test_free_slots_fill_round_by_round() -> None:
    table = table_with(JobSettings(package="p", handler="H", job="h", max_parallel_jobs=5), jobs=10)
    join(table, "a", slots=4)
    join(table, "b", slots=2)
    assert sorted(x.worker_id for x in table.pick()) == ["a", "a", "a", "b", "b"]


def test_who_a_handler_may_serve_follows_its_workers_and_its_settings() -> None:
    """``pick`` looks only at the workers a handler's clients-allowed lets in (with 10,000 idle
    streams of other workers it looked at every one, every pass): a worker that comes back with
    other labels, and a handler whose settings change, are seen at once."""
    gpu_only = JobSettings(package="p", handler="H", job="h", clients_allowed=(ClientSelector(label="gpu"),))
    table = table_with(gpu_only, jobs=10)
    join(table, "plain", slots=1)
    assert table.pick() == []  # not allowed
    table.connect(WorkerInfo(worker_id="plain", name="plain", labels={"gpu": "1"}, slots=1), [])
    table.set_capacity("plain", 1)
    assert [x.worker_id for x in table.pick()] == ["plain"]  # back with the label
    join(table, "other", slots=1)
    assert table.pick() == []
    spec = table.handlers["h"].spec
    table.update_spec(dataclasses.replace(spec, settings=dataclasses.replace(gpu_only, clients_allowed=())))
    assert {x.worker_id for x in table.pick()} == {"other"}  # anyone, now


def test_handlers_take_turns_by_priority_and_in_table_order_on_a_tie(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stride scheduling over many handlers (``pick`` keeps them in a heap by pass value: a minimum
    over every handler for each job cost 100 comparisons a job with 100 handlers), one job at a time
    (runs of jobs: tests/unit/test_lease_turns.py)."""
    monkeypatch.setattr(lease_picking, "RUN_JOBS", 1)
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    for n in range(20):
        hid = f"h{n:02d}"
        settings = JobSettings(package="p", handler="H", job=hid, priority=3.0 if n == 7 else 1.0)
        spec = HandlerSpec(handler_id=hid, job_name=hid, script_sha256="0" * 64, environment=(), settings=settings)
        table.add_handler(spec, counts={}, streak=0, active=True)
        table.enqueued(hid, 100)
        table.refilled(hid, [ReadyJob(n * 1000 + i, 0, 0, b"{}") for i in range(1, 101)], more=False)
    join(table, "a", slots=216)  # room for 220: 10 turns of 19 handlers and 30 of the heavy one
    picked = [x.handler_id for x in table.pick()]
    # All at pass 0: table order; then the heavy one, whose pass (1/3) is the lowest, twice more.
    assert picked[:22] == [f"h{n:02d}" for n in range(20)] + ["h07", "h07"]
    assert len(picked) == 220
    shares = {hid: picked.count(hid) for hid in set(picked)}
    assert shares.pop("h07") == 30
    assert set(shares.values()) == {10}


def test_a_handler_without_jobs_for_a_while_joins_the_turns_without_credit() -> None:
    """Seen in bench/scale.py: of 100 handlers started 8 at a time, one whose handler host was
    slow to make its first jobs kept the pass value it started with, and once its jobs came it
    took every worker until it caught up: a share of 1.4 of an equal one."""
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    for hid in ("a", "b", "late"):
        settings = JobSettings(package="p", handler="H", job=hid)
        spec = HandlerSpec(handler_id=hid, job_name=hid, script_sha256="0" * 64, environment=(), settings=settings)
        table.add_handler(spec, counts={}, streak=0, active=True)
    for n, hid in enumerate(("a", "b")):
        table.enqueued(hid, 100)
        table.refilled(hid, [ReadyJob(n * 1000 + i, 0, 0, b"{}") for i in range(1, 101)], more=False)
    join(table, "first", slots=36)  # room for 40
    assert {x.handler_id for x in table.pick()} == {"a", "b"}  # 20 each: "late" has no job yet
    table.enqueued("late", 100)
    table.refilled("late", [ReadyJob(5000 + i, 0, 0, b"{}") for i in range(1, 101)], more=False)
    join(table, "second", slots=26)  # room for 30
    picked = [x.handler_id for x in table.pick()]
    assert {hid: picked.count(hid) for hid in ("a", "b", "late")} == {"a": 10, "b": 10, "late": 10}
