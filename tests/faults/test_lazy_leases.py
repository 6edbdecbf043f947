"""Leases held lazily (server/leases.py): a lease of a stored job is not written when it is made.

The job's row stays available one lease number below it until its result (or a requeue) writes
the lease's number, worker and time, under a compare-and-set that only the current lease can
pass; a lease that lasts --lease-write-delay is written, and so is every one held when the
server stops, so that a restarted server adopts it. Driven by hand on the wire, against a real
server on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from netdist.api.v1 import admin_pb2, jobs_pb2
from netdist.testing import wait_until
from tests.faults.conftest import Rig
from tests.faults.hand import HandWorker, answer

pytestmark = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

ACCEPTED, DUPLICATE = jobs_pb2.ACK_OUTCOME_ACCEPTED, jobs_pb2.ACK_OUTCOME_DUPLICATE
STALE = jobs_pb2.ACK_OUTCOME_STALE
NEVER = ("--lease-write-delay", "3600")  # no lease lasts that long here: none is written while the server runs


def _serve(rig: Rig, *args: str, port: int = 0) -> None:
    rig.cluster.start_server(port=port, extra_args=args)
    rig.warmed_up()


def _stored_jobs(rig: Rig, name: str, count: int, *args: str) -> str:
    """A server started with ``args``, and a tally instance of ``count`` jobs, all stored: its id."""
    _serve(rig, *args)
    rig.upload()
    hid = rig.add(name, count=count)
    wait_until(lambda: len(rig.jobs(hid).by_status("available")) == count, 30, what=f"{count} jobs stored")
    return hid


def _row(rig: Rig, handler_id: str, job_id: int) -> tuple[str, int, str | None]:
    job = {j.id: j for j in rig.jobs(handler_id).jobs}[job_id]
    return job.status, job.lease_no, job.worker_id


def test_a_lease_held_lazily_is_not_written_and_only_its_holder_can_end_it(rig: Rig) -> None:
    """The store shows the job available below the lease; `jobs show` shows it leased to its holder;
    another stream's result for it is stale and changes nothing; the holder's counts once, and the
    row then names the lease's number and worker."""
    hid = _stored_jobs(rig, "lazy", 2, *NEVER)
    hand, other = HandWorker(rig.server.address, "hand"), HandWorker(rig.server.address, "other")
    try:
        hand.capacity(1)
        (mine,) = hand.wait_leases(1)
        job_id, lease_no = mine.ref.job_id, mine.ref.lease_no
        assert _row(rig, hid, job_id) == ("available", lease_no - 1, None)
        shown = rig.api.admin.GetJob(admin_pb2.GetJobRequest(id=job_id), timeout=30)
        assert (shown.status, shown.attempt_history[-1].lease_no) == ("leased", lease_no)
        assert shown.attempt_history[-1].worker_name == "hand"
        listed = rig.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status="available"), timeout=30)
        assert job_id not in {j.id for j in listed.jobs} and len(listed.jobs) == 1  # out, not waiting
        assert [j.id for j in rig.api.running_jobs(hid)] == [job_id]
        assert [a.outcome for a in other.results(answer(mine))] == [STALE]
        assert _row(rig, hid, job_id) == ("available", lease_no - 1, None)
        assert [a.outcome for a in hand.results(answer(mine))] == [ACCEPTED]
        assert [a.outcome for a in hand.results(answer(mine))] == [DUPLICATE]
        status, stored_no, worker_id = _row(rig, hid, job_id)
        assert status in ("succeeded", "processed") and stored_no == lease_no and worker_id == "hand"
        hand.capacity(1)
        (_, last) = hand.wait_leases(2)
        assert [a.outcome for a in hand.results(answer(last))] == [ACCEPTED]
    finally:
        hand.end()
        other.end()
    rig.finish(hid)
    rig.verify(hid, count=2, acked=[(job_id, lease_no), (last.ref.job_id, last.ref.lease_no)])


def test_jobs_held_lazily_never_make_a_page_of_available_jobs_short(rig: Rig) -> None:
    """The oldest job handed back waits while the two newer ones are held lazily (their rows show
    them available too): `jobs list --status available --limit 1` lists the one that waits, not an
    empty page."""
    hid = _stored_jobs(rig, "pages", 3, *NEVER)
    hand = HandWorker(rig.server.address, "hand", slots=3)
    try:
        hand.capacity(3)
        held = sorted(hand.wait_leases(3), key=lambda lease: lease.ref.job_id)
        hand.capacity(2)  # no room for the job handed back: it waits
        first = held[0].ref
        hand.send(jobs_pb2.WorkerMessage(hand_back=jobs_pb2.HandBack(refs=[first], reason="test")))
        wait_until(lambda: len(rig.api.running_jobs(hid)) == 2, 30, what="the first job back")

        def available(limit: int) -> list[int]:
            request = admin_pb2.ListJobsRequest(handler_ref=hid, status="available", limit=limit)
            return [j.id for j in rig.api.admin.ListJobs(request, timeout=30).jobs]

        assert available(1) == [first.job_id]
        assert available(100) == [first.job_id]
        assert {_row(rig, hid, lease.ref.job_id)[0] for lease in held[1:]} == {"available"}  # in the store
    finally:
        hand.end()


def test_a_lease_held_lazily_that_comes_back_takes_the_next_number(rig: Rig) -> None:
    """Its worker gone past the reconnect grace, the lease comes back: the row goes to the number
    after it, the old lease's result is stale, and the job goes out again above it."""
    hid = _stored_jobs(rig, "back", 1, *NEVER)
    gone = HandWorker(rig.server.address, "gone")
    gone.capacity(1)
    (lost,) = gone.wait_leases(1)
    gone.close()
    job_id, lease_no = lost.ref.job_id, lost.ref.lease_no
    wait_until(lambda: _row(rig, hid, job_id)[:2] == ("available", lease_no + 1), 30, what="the lease back")
    hand = HandWorker(rig.server.address, "hand")
    try:
        assert [a.outcome for a in hand.results(answer(lost))] == [STALE]
        hand.capacity(1)
        (again,) = hand.wait_leases(1)
        assert (again.ref.job_id, again.ref.lease_no) == (job_id, lease_no + 2)
        assert [a.outcome for a in hand.results(answer(again))] == [ACCEPTED]
    finally:
        hand.end()
    rig.finish(hid)
    rig.verify(hid, count=1, acked=[(job_id, lease_no + 2)])


def test_a_lease_that_lasts_is_written_and_adopted_after_a_kill(rig: Rig) -> None:
    """With a short delay the lease is written while its job runs; the server killed and restarted
    adopts it: the worker, back holding it, keeps it and its result counts."""
    hid = _stored_jobs(rig, "lasts", 1, "--lease-write-delay", "0.2")
    hand = HandWorker(rig.server.address, "hand")
    hand.capacity(1)
    (lease,) = hand.wait_leases(1)
    ref = (lease.ref.job_id, lease.ref.lease_no)
    wait_until(lambda: _row(rig, hid, ref[0]) == ("leased", ref[1], "hand"), 30, what="the lease written")
    port = rig.kill_server()
    hand.close()
    _serve(rig, "--lease-write-delay", "0.2", port=port)
    back = HandWorker(rig.server.address, "hand", held=[ref])
    try:
        assert [a.outcome for a in back.results(answer(lease))] == [ACCEPTED]
        assert back.revoked == []
    finally:
        back.end()
    rig.finish(hid)
    rig.verify(hid, count=1, acked=[ref])


def test_a_server_that_stops_writes_the_leases_it_holds_lazily(rig: Rig) -> None:
    """A clean stop (SIGTERM) writes every lease held lazily: the next server adopts them, and their
    results count."""
    hid = _stored_jobs(rig, "stops", 2, *NEVER)
    hand = HandWorker(rig.server.address, "hand", slots=2)
    hand.capacity(2)
    leases = hand.wait_leases(2)
    refs = [(x.ref.job_id, x.ref.lease_no) for x in leases]
    assert all(_row(rig, hid, j)[:2] == ("available", n - 1) for j, n in refs)
    port = int(rig.server.address.rsplit(":", 1)[1])
    rig.server.stop()
    hand.close()
    assert all(_row(rig, hid, j) == ("leased", n, "hand") for j, n in refs)
    _serve(rig, *NEVER, port=port)
    back = HandWorker(rig.server.address, "hand", slots=2, held=refs)
    try:
        assert [a.outcome for a in back.results(*(answer(x) for x in leases))] == [ACCEPTED] * 2
        assert back.revoked == []
    finally:
        back.end()
    rig.finish(hid)
    rig.verify(hid, count=2, acked=refs)
