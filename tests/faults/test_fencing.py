"""Fencing, driven by hand on the wire: stale and forged results change nothing,
dropped streams fail no job that never ran, and a greedy Capacity gets a few
jobs, not the queue."""

from __future__ import annotations

import pytest

from netdist.api.v1 import jobs_pb2
from netdist.testing import wait_until
from tests.faults.conftest import Rig
from tests.faults.hand import HandWorker, answer, forged

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

STALE, UNKNOWN = jobs_pb2.ACK_OUTCOME_STALE, jobs_pb2.ACK_OUTCOME_UNKNOWN
ACCEPTED, DUPLICATE = jobs_pb2.ACK_OUTCOME_ACCEPTED, jobs_pb2.ACK_OUTCOME_DUPLICATE
GREEDY_MOST = 8  # slots (1) plus the server's prefetch bound, generously


def test_stale_and_forged_results_are_answered_and_change_nothing(rig: Rig) -> None:
    rig.upload()
    real = rig.worker("real")
    real_id = rig.worker_id(real)
    count, gate = 30, rig.gate()
    hid = rig.add("fencing", count=count, gate=str(gate), gate_from=0)  # the real worker's job waits
    wait_until(
        lambda: any(j.worker_id == real_id for j in rig.jobs(hid).by_status("leased")),
        30,
        what="the real worker to hold a job",
    )
    hand = HandWorker(rig.server.address, "hand")
    try:
        hand.capacity(1)
        (mine,) = hand.wait_leases(1)
        snap = rig.jobs(hid)
        theirs = next(j for j in snap.by_status("leased") if j.worker_id == real_id)
        # Its own lease is held lazily: the store shows that job available too, below the lease.
        queued = next(j for j in snap.by_status("available") if j.id != mine.ref.job_id)
        acks = hand.results(
            forged(queued.id, queued.lease_no + 1, queued.index),  # never leased to this stream
            answer(mine, lease_no=mine.ref.lease_no + 7, y=-1),  # its own job, a made-up lease
            forged(theirs.id, theirs.lease_no, theirs.index),  # the real worker's current lease
            forged(theirs.id, theirs.lease_no, theirs.index, error="forged failure"),
            forged(10**9, 1, 0),  # no such job
        )
        assert [a.outcome for a in acks] == [STALE, STALE, STALE, STALE, UNKNOWN]
        after = {j.id: j for j in rig.jobs(hid).jobs}
        assert (after[queued.id].status, after[queued.id].lease_no) == ("available", queued.lease_no)
        assert (after[theirs.id].status, after[theirs.id].worker_id, after[theirs.id].lease_no) == (
            "leased",
            real_id,
            theirs.lease_no,
        )
        assert (after[mine.ref.job_id].status, after[mine.ref.job_id].lease_no) == ("available", mine.ref.lease_no - 1)
        assert hand.revoked == []  # nothing took the hand worker's own lease away either
        # The right result for its own lease counts, once.
        assert [a.outcome for a in hand.results(answer(mine))] == [ACCEPTED]
        assert [a.outcome for a in hand.results(answer(mine))] == [DUPLICATE]
        accepted = [(mine.ref.job_id, mine.ref.lease_no)]
        hand.capacity(0)
    finally:
        hand.close()
    gate.touch()
    rig.finish(hid)
    rig.warmed_up()
    rig.verify(hid, count=count, acked=accepted)


def test_connect_take_drop_cycles_fail_no_job_that_never_ran(rig: Rig) -> None:
    """max-attempts = 1: an unstarted lease lost with its stream must not be charged.
    A fourth cycle starts its job before dropping: that one is charged, and fails."""
    rig.upload()
    count = 12
    hid = rig.add("cycles", settings="auto-start = true\nmax-attempts = 1", count=count)
    taken: set[int] = set()
    for cycle in range(3):
        hand = HandWorker(rig.server.address, "cycler", slots=3)
        hand.capacity(3)
        taken.update(lease.ref.job_id for lease in hand.wait_leases(3))
        hand.close()  # no Started, no HandBack: the stream just ends
        if cycle == 1:  # let one cycle's leases outlive the reconnect grace
            wait_until(
                lambda: not any(j.worker_id == "cycler" for j in rig.api.running_jobs(hid)),
                30,
                what="the dropped leases to come back",
            )
    hand = HandWorker(rig.server.address, "starter")
    hand.capacity(1)
    (started,) = hand.wait_leases(1)
    hand.started(started)
    hand.end()  # in order: the Started arrives before the stream ends
    wait_until(lambda: not rig.api.running_jobs(hid), 30, what="every dropped lease to come back")
    snap = rig.jobs(hid)
    assert all(j.attempts == 0 for j in snap.jobs if j.id != started.ref.job_id), [
        (j.id, j.attempts) for j in snap.jobs
    ]
    assert all(j.lease_no >= 2 for j in snap.jobs if j.id in taken)  # a lease and a requeue each, at least

    rig.worker_id(rig.worker("w1", slots=2))
    rig.finish(hid)
    rig.warmed_up()
    index = next(j.index for j in snap.jobs if j.id == started.ref.job_id)
    done = rig.verify(hid, count=count, failing={index: ""})
    assert all(j.attempts == 1 for j in done.jobs)


def test_a_greedy_capacity_holds_a_few_jobs_not_the_queue(rig: Rig) -> None:
    rig.upload()
    count = 60
    hid = rig.add("greedy", count=count, sleep=0.01)
    greedy = HandWorker(rig.server.address, "greedy", slots=1)
    try:
        greedy.capacity(2**31 - 1)
        greedy.wait_leases(1)
        rig.worker_id(rig.worker("w1", slots=2))
        # The real worker processes every job the greedy one does not hold.
        wait_until(
            lambda: len(rig.jobs(hid).by_status("processed")) + len(greedy.leases) >= count,
            60,
            what="the real worker to process the rest",
        )
        assert len(greedy.leases) <= GREEDY_MOST, f"Hello(slots=1) took {len(greedy.leases)} jobs"
        rig.warmed_up()
        rig.verify(hid, count=count, finished=False)
    finally:
        greedy.close()
    rig.finish(hid)  # its leases come back after the reconnect grace
    rig.verify(hid, count=count)
