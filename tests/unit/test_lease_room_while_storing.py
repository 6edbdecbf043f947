"""A worker's answered jobs free its room at once, not when their results commit.

Seen from outside (a 200,000-job benchmark, the worker's holdings sampled every 5 ms):
each worker held no lease in 64% of the samples, with its whole window (1,025 jobs)
answered and waiting for acknowledgements: the lease came back to it only once the
result's group commit and its fsync were done. Those results still wait in the worker's
memory until acknowledged, so they take no room only up to the window again.
"""

from __future__ import annotations

from netdist.server.lease_model import ResultIn, Settlement
from netdist.server.leases import LeaseTable
from tests.lease_tables import table_with_worker


def answer(table: LeaseTable, job_id: int) -> list[Settlement]:
    verdicts, accepted, _ = table.settle("w", [ResultIn(job_id, 1, "null", None, 0.01)])
    assert len(accepted) == 1, verdicts
    return accepted


def test_an_answered_lease_makes_room_before_its_commit_up_to_the_window_again() -> None:
    table = table_with_worker(5, slots=1)  # one slot, no prefetch: a window of one lease
    [first] = table.pick()
    table.leases_stored([first], {first.job_id})
    assert table.pick() == []  # its one slot is taken

    storing = answer(table, first.job_id)
    [second] = table.pick()  # the first result is not committed yet
    assert second.job_id != first.job_id
    table.leases_stored([second], {second.job_id})
    storing += answer(table, second.job_id)
    assert table.pick() == []  # a window's worth of results waits for the store: no more

    table.settled(storing, {s.result.job_id for s in storing})
    assert len(table.pick()) == 1
    assert table.workers["w"].answered == set()


def test_a_result_the_store_did_not_take_holds_its_room_again() -> None:
    table = table_with_worker(5, slots=1)  # one slot, no prefetch: a window of one lease
    [first] = table.pick()
    table.leases_stored([first], {first.job_id})
    storing = answer(table, first.job_id)
    table.settled(storing, set())  # the write failed: the worker sends it again after reconnecting
    assert table.workers["w"].answered == set()
    assert table.pick() == []
