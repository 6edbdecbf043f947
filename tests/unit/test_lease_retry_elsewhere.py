"""A job that failed on a worker is retried on another one when another is there.

Seen from outside: with ``max-attempts = 3`` and a broken host next to a healthy
one, a quarter of the jobs failed for good, each with its three attempts on the
broken host within a second: a retried job went back to the front of the queue,
and the worker that had just failed it was the first with room again.
"""

from __future__ import annotations

from netdist.jobscript import JobSettings
from netdist.server.lease_model import RETRY_ELSEWHERE_SECONDS, HandlerSpec, Lease, ReadyJob, ResultIn, WorkerInfo
from netdist.server.leases import LeaseTable
from netdist.server.states import JobStatus
from tests.clock import ManualClock

ERROR = {"type": "RuntimeError", "message": "broken host", "traceback": ""}


def table_with(jobs: int, *, max_attempts: int = 3, job_timeout_seconds: float | None = None) -> LeaseTable:
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    settings = JobSettings(
        package="p", handler="H", job="h", max_attempts=max_attempts, job_timeout_seconds=job_timeout_seconds
    )
    spec = HandlerSpec(handler_id="h", job_name="h", script_sha256="0" * 64, environment=(), settings=settings)
    table.add_handler(spec, counts={}, streak=0, active=True)
    table.enqueued("h", jobs)
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in range(1, jobs + 1)], more=False)
    return table


def join(table: LeaseTable, worker_id: str) -> None:
    """A worker of one slot, asking for just that slot."""
    table.connect(WorkerInfo(worker_id=worker_id, name=worker_id, labels={}, slots=1), [])
    table.set_capacity(worker_id, 1)


def pick(table: LeaseTable) -> dict[int, str]:
    """Job id -> worker of the leases made, started at once."""
    leases = table.pick()
    for lease in leases:
        table.started(lease.worker_id, [lease.ref])
    return {lease.job_id: lease.worker_id for lease in leases}


def end(table: LeaseTable, job_id: int, *, failed: bool) -> None:
    lease = table.leases[job_id]
    result = ResultIn(job_id, lease.lease_no, None if failed else "null", ERROR if failed else None, 0.1)
    _, accepted, _ = table.settle(lease.worker_id, [result])
    table.settled(accepted, {job_id})


def lease_of(table: LeaseTable, job_id: int) -> Lease:
    return table.leases[job_id]


def test_an_errored_job_goes_to_another_worker_and_the_failing_one_takes_the_next_job() -> None:
    table = table_with(3)
    join(table, "broken")
    join(table, "healthy")
    assert pick(table) == {1: "broken", 2: "healthy"}
    end(table, 1, failed=True)
    assert pick(table) == {3: "broken"}  # job 1 waits for the healthy worker, busy with job 2
    end(table, 2, failed=False)
    assert pick(table) == {1: "healthy"}
    assert lease_of(table, 1).attempt == 2


def test_a_worker_alone_still_retries_its_failed_job() -> None:
    table = table_with(1)
    join(table, "only")
    for attempt in (1, 2, 3):
        assert pick(table) == {1: "only"}
        assert lease_of(table, 1).attempt == attempt
        end(table, 1, failed=True)
    assert table.counts("h")[JobStatus.ERRORED] == 1
    assert pick(table) == {}


def test_the_failing_worker_takes_it_back_when_no_other_takes_it_in_time() -> None:
    table = table_with(2)
    join(table, "broken")
    join(table, "busy")
    assert pick(table) == {1: "broken", 2: "busy"}
    end(table, 1, failed=True)
    assert pick(table) == {}
    clock = table.clock
    assert isinstance(clock, ManualClock)
    clock.advance(RETRY_ELSEWHERE_SECONDS - 0.5)
    assert not table.tick().pick
    assert pick(table) == {}
    clock.advance(1.0)
    assert table.tick().pick  # the wait ended: the dispatcher picks again
    assert pick(table) == {1: "broken"}


def test_a_job_that_timed_out_goes_to_another_worker() -> None:
    table = table_with(2, job_timeout_seconds=10.0)
    join(table, "hung")
    join(table, "healthy")
    assert pick(table) == {1: "hung", 2: "healthy"}
    end(table, 2, failed=False)
    clock = table.clock
    assert isinstance(clock, ManualClock)
    clock.advance(11.0)
    effects = table.tick()
    assert [(r.job_id, r.charged) for r in effects.requeues] == [(1, True)]
    assert pick(table) == {1: "healthy"}


def test_a_job_that_failed_on_every_connected_worker_may_go_to_any_of_them() -> None:
    table = table_with(3)
    join(table, "a")
    join(table, "b")
    assert pick(table) == {1: "a", 2: "b"}
    end(table, 1, failed=True)
    end(table, 2, failed=False)
    assert pick(table) == {1: "b", 3: "a"}
    end(table, 1, failed=True)  # failed on both now
    assert pick(table) == {1: "b"}
    assert lease_of(table, 1).attempt == 3


def test_a_failed_job_handed_back_by_another_worker_still_keeps_away_from_the_one_it_failed_on() -> None:
    table = table_with(3)
    join(table, "broken")
    join(table, "healthy")
    assert pick(table) == {1: "broken", 2: "healthy"}
    end(table, 1, failed=True)
    end(table, 2, failed=False)
    assert pick(table) == {1: "healthy", 3: "broken"}
    table.hand_back("healthy", [lease_of(table, 1).ref], "shutting down")
    end(table, 3, failed=False)
    assert pick(table) == {1: "healthy"}  # the broken worker, free and first in turn, is passed over


def test_a_job_that_never_failed_costs_nothing_new() -> None:
    """Only failed jobs are held aside, and the workers they failed on are forgotten once they end."""
    table = table_with(2)
    join(table, "broken")
    join(table, "healthy")
    pick(table)
    end(table, 1, failed=True)
    end(table, 2, failed=False)
    queue = table.handlers["h"]
    assert not queue.ready and list(queue.held) == [frozenset({"broken"})]
    assert pick(table) == {1: "healthy"}
    assert not queue.held and queue.failed_on == {1: frozenset({"broken"})}
    end(table, 1, failed=False)
    table.tick()
    assert queue.failed_on == {}
