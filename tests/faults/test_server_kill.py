"""kill -9 of the server at several points of a run: nothing lost, every result counted once."""

from __future__ import annotations

import threading

import grpc
import pytest

from netdist.api.v1 import jobs_pb2, packages_pb2
from netdist.testing import Admin, wait_until
from tests.faults.conftest import Rig
from tests.faults.hand import HandWorker, answer
from tests.faults.tally import ballast_wheel, tally_wheel

COUNT = 150


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_server_killed_while_leasing_while_results_flow_and_while_the_handler_processes(rig: Rig) -> None:
    rig.upload()
    workers = [rig.worker("w1", slots=2), rig.worker("w2", slots=2)]
    for w in workers:
        rig.worker_id(w)
    # The handler takes 30 ms per result, slower than 4 slots of 10 ms jobs deliver them, so
    # stored, unprocessed results are there to be caught for point 3.
    hid = rig.add("kill", count=COUNT, sleep=0.01, process_sleep=0.03, batch=40)

    def stored() -> int:
        return len(rig.jobs(hid).by_status("succeeded", "processed"))

    def restart(port: int) -> None:
        rig.restart_server(port)
        rig.warmed_up()
        rig.verify(hid, count=COUNT, finished=False)  # after each fault: the books balance mid-run

    # 1. While the first leases are out (held lazily: the store does not show them; the lease table does).
    wait_until(lambda: rig.api.running_jobs(hid), 30, interval=0.01, what="the first leases")
    restart(rig.kill_server())
    # 2. While results flow.
    wait_until(lambda: stored() >= 30, 60, interval=0.02, what="results flowing")
    restart(rig.kill_server())
    # 3. While the handler processes: results stored and not yet processed.
    # (The handler commits a batch of up to 500 results at once, so `processed` can jump from 0
    # to 150 in one step: points 2 and 3 wait on stored results, not on processed ones.)
    wait_until(lambda: rig.jobs(hid).by_status("succeeded"), 60, interval=0.01, what="results waiting for the handler")
    restart(rig.kill_server())
    rig.finish(hid, timeout=90)
    rig.verify(hid, count=COUNT)
    wait_until(
        lambda: {w.name for w in rig.api.workers() if w.connected} == {"w1", "w2"},
        30,
        what="both workers to be connected",
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_server_killed_mid_upload_leaves_no_partial_blob_and_the_retry_succeeds(rig: Rig) -> None:
    wheels = [tally_wheel(rig.root / "wheels"), ballast_wheel(rig.root / "wheels", megabytes=8)]
    proxy = rig.proxy()  # only to count the bytes that reached the server
    admin = Admin(proxy.address, token=rig.server.admin_token)
    failure: list[BaseException] = []

    def upload() -> None:
        try:
            admin.upload(*wheels)
        except BaseException as exc:
            failure.append(exc)

    uploading = threading.Thread(target=upload)
    uploading.start()
    wait_until(
        lambda: proxy.bytes_up > 2 << 20 or not uploading.is_alive(),
        60,
        interval=0.005,
        what="the upload to be under way",
    )
    port = rig.kill_server()
    uploading.join(60)
    admin.close()
    assert failure and isinstance(failure[0], grpc.RpcError), failure
    assert failure[0].code() == grpc.StatusCode.UNAVAILABLE

    rig.restart_server(port)
    rig.warmed_up()
    rig.inv.verify_store()  # no partial blob, no package half-stored
    assert list(rig.api.packages.List(packages_pb2.ListPackagesRequest(), timeout=10).packages) == []
    up = rig.api.upload(*wheels)
    assert up.created and up.package.name == "tally"
    rig.worker("w1")
    hid = rig.add("after-upload", count=5)
    rig.finish(hid)
    rig.verify(hid, count=5)


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_lease_sent_before_its_commit_and_lost_with_the_server_is_never_handed_out_again(rig: Rig) -> None:
    """A lease goes to its worker while its write is on the way. Here the write cannot commit (the
    test holds the store's write lock) when the server is killed: the restarted server must refuse
    that lease's result and lease the job again under a higher number."""
    rig.upload()
    hid = rig.add("early", count=3)
    wait_until(lambda: len(rig.jobs(hid).by_status("available")) == 3, 30, what="3 jobs stored")
    hand = HandWorker(rig.server.address, "hand")
    with rig.store_write_lock():
        hand.capacity(1)
        (lease,) = hand.wait_leases(1)
        job_id, sent_no = lease.ref.job_id, lease.ref.lease_no
        stored = {j.id: j for j in rig.jobs(hid).jobs}[job_id]
        assert (stored.status, stored.lease_no) == ("available", sent_no - 1), "the lease was not sent early"
        port = rig.kill_server()
    hand.close()
    leases = _back_holding_a_lost_lease(rig, port, hid, lease, refused_as=jobs_pb2.ACK_OUTCOME_STALE)
    (job,) = [x for x in leases if x.ref.job_id == job_id]
    assert job.ref.lease_no > sent_no, f"lease {sent_no} of job {job_id} was handed out again"


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_job_leased_before_its_commit_and_lost_with_the_server_never_existed(rig: Rig) -> None:
    """A new job goes to a worker while the transaction that stores it commits. Here it cannot commit
    (the test holds the store's write lock) when the server is killed: the job never existed, the
    restarted server refuses its lease and its result, and no later job gets its id."""
    rig.upload()
    gate = rig.gate("create")
    hand = HandWorker(rig.server.address, "hand")
    hand.capacity(1)
    hid = rig.add("unstored", count=3, batch=3, create_gate=str(gate), create_gate_from=0)
    waiting = gate.with_name(gate.name + ".waiting")
    wait_until(waiting.exists, 30, what="the handler making its jobs")
    with rig.store_write_lock():  # its state and hooks are stored; its jobs will not be
        gate.touch()
        (lease,) = hand.wait_leases(1)
        assert rig.jobs(hid).jobs == [], "the job was stored before it was leased"
        port = rig.kill_server()
    hand.close()
    leases = _back_holding_a_lost_lease(rig, port, hid, lease, refused_as=jobs_pb2.ACK_OUTCOME_UNKNOWN)
    assert min(x.ref.job_id for x in leases) > lease.ref.job_id, "a new job got the lost job's id"


def _back_holding_a_lost_lease(
    rig: Rig, port: int, handler_id: str, lease: jobs_pb2.Lease, *, refused_as: int
) -> list[jobs_pb2.Lease]:
    """The server restarts and the worker comes back holding ``lease``, lost with the killed server:
    it is revoked at once and its result answered ``refused_as``, changing nothing; then the worker
    runs the handler's three jobs, each accepted, and the run adds up. Returns their leases."""
    rig.restart_server(port)
    rig.warmed_up()
    ref = (lease.ref.job_id, lease.ref.lease_no)
    again = HandWorker(rig.server.address, "hand", slots=3, held=[ref])
    try:
        wait_until(lambda: again.revoked == [ref], 10, what="the lost lease revoked")
        assert [a.outcome for a in again.results(answer(lease))] == [refused_as]
        again.capacity(3)
        leases = again.wait_leases(3)
        acks = again.results(*(answer(x) for x in leases))
        assert [a.outcome for a in acks] == [jobs_pb2.ACK_OUTCOME_ACCEPTED] * 3
    finally:
        again.end()
    rig.finish(handler_id)
    rig.verify(handler_id, count=3)
    return leases
