"""Which handler's job goes next in a pick: stride scheduling by priority, in runs.

The picker serves the handler with the lowest pass value (the first in the table's order on a tie)
and moves its pass value by 1 / priority per job; within one pick that handler gives ``RUN_JOBS``
jobs in a row, and more while its pass value is still the lowest (``RUN_JOBS`` 1: one job at a
time). The order must be the one a job-by-job choice makes, with handlers running dry and limits
that a lease moves (jobs per client) among them.
"""

from __future__ import annotations

import pytest

from netdist.jobscript import JobSettings
from netdist.server import lease_picking
from netdist.server.lease_model import HandlerSpec, ReadyJob, WorkerInfo
from netdist.server.leases import LeaseTable
from tests.clock import ManualClock

HANDLERS = {  # handler id: (priority, jobs, jobs per client)
    "a": (1.0, 40, None),
    "b": (2.0, 60, None),
    "c": (0.5, 5, None),  # runs dry early
    "d": (3.0, 60, 7),  # a limit that each lease moves
    "e": (1.0, 40, None),  # ties with a
}


def reference(room: int, run_jobs: int) -> list[str]:
    """The order a choice made job by job gives: the handler of the last job while it may serve and it
    gave fewer than ``run_jobs`` in a row, else the lowest (pass value, table order) that may serve. The
    first job is a pick of its own (the worker's free slot)."""
    passes = dict.fromkeys(HANDLERS, 0.0)
    left = {h: jobs for h, (_, jobs, _) in HANDLERS.items()}
    given = dict.fromkeys(HANDLERS, 0)
    order: list[str] = []
    turn = lambda x: (passes[x], list(HANDLERS).index(x))  # noqa: E731
    in_row = 0
    while len(order) < room:
        open_ = [h for h, (_, _, cap) in HANDLERS.items() if left[h] and (cap is None or given[h] < cap)]
        if not open_:
            break
        last = order[-1] if len(order) > 1 else None
        h = last if last in open_ and in_row < run_jobs else min(open_, key=turn)
        in_row = in_row + 1 if h == last else 1
        order.append(h)
        left[h] -= 1
        given[h] += 1
        passes[h] += 1.0 / HANDLERS[h][0]
    return order


@pytest.mark.parametrize("run_jobs", [1, 4, lease_picking.RUN_JOBS])
@pytest.mark.parametrize("room", [1, 7, 50, 150, 500])
def test_a_pick_serves_handlers_in_the_order_a_job_by_job_choice_would(
    room: int, run_jobs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_picking, "RUN_JOBS", run_jobs)
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    next_id = 1
    for handler_id, (priority, jobs, cap) in HANDLERS.items():
        settings = JobSettings(package="p", handler="H", job=handler_id, priority=priority, max_jobs_per_client=cap)
        spec = HandlerSpec(
            handler_id=handler_id, job_name=handler_id, script_sha256="0" * 64, environment=(), settings=settings
        )
        table.add_handler(spec, counts={}, streak=0, active=True)
        table.enqueued(handler_id, jobs)
        table.refilled(handler_id, [ReadyJob(i, 0, 0, b"{}") for i in range(next_id, next_id + jobs)], more=False)
        next_id += jobs
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=1), [])
    table.set_capacity("w", room)
    table.workers["w"].ewma_seconds = 0.0001  # short jobs: all but the first are prefetch, picked in one go
    for queue in table.handlers.values():
        queue.ewma_seconds = 0.0001  # each handler's too: its own bounds its prefetch
    assert [lease.handler_id for lease in table.pick()] == reference(room, run_jobs)
