"""Jobs the lease table takes back go out again in the order they were enqueued.

A handler's ``max-sequenced-errors`` counts failures in a row, so the order in
which jobs run is part of what the operator sees: a handler whose every other
job fails must never see two failures in a row because of the table. Probation
took a worker's prefetched jobs 1, 2, 3 back and pushed each to the front, which
sent them out again as 3, 2, 1 (a flaky integration test showed it).
"""

from __future__ import annotations

from netdist.jobscript import JobSettings
from netdist.server.lease_model import HandlerSpec, ReadyJob, ResultIn, WorkerInfo
from netdist.server.leases import LeaseTable
from tests.clock import ManualClock


def _table(**settings: int) -> LeaseTable:
    """A lease table with one active handler ``h``."""
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    spec = HandlerSpec(
        handler_id="h",
        job_name="h",
        script_sha256="0" * 64,
        environment=(),
        settings=JobSettings(package="p", handler="H", job="h", **settings),  # type: ignore[arg-type]
    )
    table.add_handler(spec, counts={}, streak=0, active=True)
    return table


def test_jobs_taken_back_by_probation_go_out_again_in_enqueue_order() -> None:
    table = _table(max_attempts=1)
    table.enqueued("h", 6)
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in range(1, 7)], more=False)
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=1), [])
    table.set_capacity("w", 4)  # one slot and three prefetched,
    table.workers["w"].ewma_seconds = table.handlers["h"].ewma_seconds = 0.01  # as it allows for jobs of 10 ms

    leases = table.pick()
    assert [x.job_id for x in leases] == [1, 2, 3, 4]
    table.leases_stored(leases, {x.job_id for x in leases})
    table.started("w", [leases[0].ref])
    failed = ResultIn(
        job_id=1,
        lease_no=leases[0].lease_no,
        output=None,
        duration_seconds=0.01,
        error={"type": "E", "message": "m", "traceback": ""},
    )
    _, settlements, effects = table.settle("w", [failed])
    after = table.settled(settlements, {1})  # the failure is stored: probation takes 2, 3, 4 back
    assert sorted(q.job_id for q in effects.requeues + after.requeues) == [2, 3, 4]

    again = table.pick()  # on probation: one job per free slot, and it is the oldest
    assert [x.job_id for x in again] == [2]
    table.leases_stored(again, {2})
    table.started("w", [again[0].ref])
    ok = ResultIn(job_id=2, lease_no=again[0].lease_no, output="1", error=None, duration_seconds=0.01)
    _, settlements, _ = table.settle("w", [ok])
    table.settled(settlements, {2})
    assert [x.job_id for x in table.pick()] == [3, 4, 5, 6]


def test_an_enqueue_reads_the_refill_back_only_when_the_queue_runs_low_and_no_refill_is_on_the_way() -> None:
    table = _table()
    assert table.refill_with_enqueue("h", low_water=2) == 0  # from the start: nothing loaded yet
    assert table.refill_with_enqueue("h", low_water=2) is None  # that refill is on the way
    assert table.refills_wanted(2) == []  # and the dispatcher does not start another
    table.enqueued("h", 3)
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in (1, 2, 3)], more=False)
    assert table.refill_with_enqueue("h", low_water=2) is None  # three queued: enough
    assert table.refill_with_enqueue("h", low_water=4) == 3  # below four: from the last job loaded
    table.refill_failed("h")  # the write failed: the next may read again
    assert table.refill_with_enqueue("h", low_water=4) == 3
    table.refill_failed("h")
    table.set_active("h", False)
    assert table.refill_with_enqueue("h", low_water=4) is None  # paused: nothing is loaded for it


def _queue(table: LeaseTable, ids: range | list[int], limit: int = 10) -> bool:
    if not table.may_queue_unstored("h", len(ids), limit):
        return False
    table.queue_unstored("h", [ReadyJob(i, 0, 0, b"{}") for i in ids])
    return True


def test_new_jobs_join_the_queue_before_their_commit_only_when_it_holds_all_the_store_has() -> None:
    table = _table()
    assert not _queue(table, [1, 2])  # nothing loaded yet: older jobs may wait in the store
    table.refilled("h", [], more=False)  # the store has none
    assert _queue(table, [1, 2])
    assert table.counts("h")["available"] == 2
    assert not _queue(table, range(3, 12))  # past the limit,
    table.enqueued("h", 9)  # so those go through the store, and a refill brings them
    assert not _queue(table, [12])  # which comes first
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in range(3, 12)], more=False)
    assert _queue(table, [12], limit=20)
    table.set_active("h", False)
    assert not _queue(table, [13], limit=20)  # paused: into the store
    table.set_active("h", True)
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=3), held=())
    table.set_capacity("w", 3)
    assert [x.job_id for x in table.pick()] == [1, 2, 3]  # in the order they were made


def test_new_jobs_join_the_queue_in_memory_only_within_its_bound_of_input_bytes() -> None:
    """A queue in memory holds jobs' inputs: new jobs join it while those stay within a bound of
    bytes (a handler of 1 MB inputs would otherwise hold thousands of them); a job leased, or
    withdrawn and passed over, frees its bytes."""
    table = _table()
    table.refilled("h", [], more=False)
    queue = table.handlers["h"]

    def offer(ids: list[int], size: int) -> bool:
        if not table.may_queue_unstored("h", len(ids), 100, nbytes=size * len(ids), max_bytes=1000):
            return False
        table.queue_unstored("h", [ReadyJob(i, 0, 0, b"x" * size) for i in ids])
        return True

    assert offer([1, 2], 400)
    assert queue.ready_bytes == 800
    assert not offer([3], 400)  # 1,200 bytes: over the bound
    assert queue.pop() is not None  # leased: its input leaves the queue
    assert queue.ready_bytes == 400
    table.withdraw("h", [2])  # its insert failed: it stays in the deque until passed over
    assert queue.pop() is None
    assert queue.ready_bytes == 0
    assert offer([4, 5], 500)


def test_jobs_whose_insert_failed_leave_the_queue() -> None:
    table = _table()
    table.refilled("h", [], more=False)
    assert _queue(table, [1, 2, 3])
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=1), held=())
    table.set_capacity("w", 1)
    (leased,) = table.pick()
    assert leased.sent and not leased.written  # held lazily: no write of its own to refuse it
    effects = table.withdraw("h", [1, 2, 3])
    assert [(r.worker_id, r.refs) for r in effects.revocations] == [("w", ((1, leased.lease_no),))]
    assert not effects.requeues  # the job never existed: nothing to write
    assert table.counts("h")["available"] == 0 and table.counts("h")["leased"] == 0
    assert table.leases == {} and table.workers["w"].jobs == set()
    table.set_capacity("w", 5)
    assert leased.job_id == 1 and table.pick() == []
