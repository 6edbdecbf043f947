"""The worker protocol driven by hand against a real server: credits, acks, duplicates."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2, jobs_pb2, jobs_pb2_grpc
from netdist.testing import wait_until
from netdist.wire import STREAM_END_KEY
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.in_process]


class HandWorker:
    """A worker stream whose every message the test writes itself."""

    def __init__(
        self,
        cluster: Cluster,
        worker_id: str = "hand-1",
        *,
        heartbeat_seconds: float | None = None,
        platform: jobs_pb2.WheelPlatform | None = None,
        reads_accepted_refs: bool = False,
    ) -> None:
        """``heartbeat_seconds``: send heartbeats this often, for a test that outlasts the server's
        silence limit (3 heartbeat intervals of the cluster, under a second). ``platform``: the wheel
        platform its Hello reports; ``reads_accepted_refs``: what its Hello says of acks."""
        self.outgoing: queue.Queue[jobs_pb2.WorkerMessage | None] = queue.Queue()
        self.leased: list[jobs_pb2.Lease] = []
        self._closed = threading.Event()
        stub = jobs_pb2_grpc.JobServiceStub(cluster.api.channel)
        hello = jobs_pb2.Hello(
            worker_id=worker_id,
            name=worker_id,
            slots=4,
            wheel_platform=platform,
            reads_accepted_refs=reads_accepted_refs,
        )
        self.send(jobs_pb2.WorkerMessage(hello=hello))
        self.incoming = stub.Connect(self._requests(), timeout=60)
        first = next(self.incoming)
        assert first.HasField("welcome"), first
        self.welcome = first.welcome
        if heartbeat_seconds is not None:
            threading.Thread(target=self._beat, args=(heartbeat_seconds,), daemon=True).start()

    def _requests(self) -> Iterator[jobs_pb2.WorkerMessage]:
        while (message := self.outgoing.get()) is not None:
            yield message

    def _beat(self, seconds: float) -> None:
        while not self._closed.wait(seconds):
            self.send(jobs_pb2.WorkerMessage(heartbeat=jobs_pb2.Heartbeat()))

    def send(self, message: jobs_pb2.WorkerMessage) -> None:
        self.outgoing.put(message)

    def next(self) -> jobs_pb2.ServerMessage:
        message: jobs_pb2.ServerMessage = next(self.incoming)
        return message

    def next_of(self, kind: str) -> jobs_pb2.ServerMessage:
        """The next message of ``kind``; leases that come first are kept in ``self.leased``."""
        while True:
            message = self.next()
            if message.WhichOneof("kind") == kind:
                return message
            assert message.WhichOneof("kind") == "leases", message
            self.leased += message.leases.items

    def close(self) -> None:
        self._closed.set()
        self.outgoing.put(None)
        self.incoming.cancel()


def result(lease: jobs_pb2.Lease) -> jobs_pb2.Result:
    value = json.loads(lease.input)
    return jobs_pb2.Result(ref=lease.ref, output=json.dumps({"double": value["i"] * 2}).encode())


def test_credit_leases_results_acks_and_duplicates(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "s.py", settings="auto-start = true", count=5)).handler.id
    worker = HandWorker(cluster)
    try:
        worker.send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=2)))
        leases: list[jobs_pb2.Lease] = []
        while len(leases) < 2:
            message = worker.next()
            assert message.WhichOneof("kind") == "leases", message
            leases += message.leases.items
        assert len(leases) == 2  # never more than the capacity
        table = cluster.app.leases(worker_id="hand-1")  # the lease table holds what was sent, no more
        assert [(lease.job_id, lease.lease_no, lease.sent) for lease in table] == sorted(
            (lease.ref.job_id, lease.ref.lease_no, True) for lease in leases
        )
        # Held lazily (a job the store holds as it is): nothing to write before they count as stored.
        wait_until(
            lambda: all(lease.stored for lease in cluster.app.leases(worker_id="hand-1")), 10, what="the leases stored"
        )
        assert all(lease.script_sha256 and len(lease.environment) == 1 for lease in leases)
        worker.send(jobs_pb2.WorkerMessage(results=jobs_pb2.ResultBatch(items=[result(leases[0])])))
        ack = worker.next_of("ack")  # and not a Revoke of the lease just answered
        assert [a.outcome for a in ack.ack.items] == [jobs_pb2.ACK_OUTCOME_ACCEPTED]
        # The same result again is a duplicate; a result for no job is unknown.
        ghost = jobs_pb2.Result(ref=jobs_pb2.JobRef(job_id=10**9, lease_no=1), output=b"1")
        worker.send(jobs_pb2.WorkerMessage(results=jobs_pb2.ResultBatch(items=[result(leases[0]), ghost])))
        ack = worker.next_of("ack")
        assert [a.outcome for a in ack.ack.items] == [jobs_pb2.ACK_OUTCOME_DUPLICATE, jobs_pb2.ACK_OUTCOME_UNKNOWN]
        running = cluster.api.running_jobs(hid)
        out = [leases[1].ref.job_id, *(lease.ref.job_id for lease in worker.leased)]
        assert sorted(j.id for j in running) == sorted(out)
        assert running[0].worker_name == "hand-1"
        # Stopping the handler revokes the lease still out.
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP)
        revoke = worker.next_of("revoke")
        assert sorted(r.job_id for r in revoke.revoke.refs) == sorted(out)
        assert not cluster.app.leases(handler_id=hid)  # revoked means gone from the table, not only told
        assert cluster.app.runtime(hid) is None
    finally:
        worker.close()


def test_a_worker_that_reads_accepted_refs_gets_them_as_two_lists(cluster: Cluster, tmp_path: Path) -> None:
    """Its Hello said so: accepted results come back as packed numbers, the others as items, in one Ack
    (a worker that did not say so gets every ack as an item, in the order of its results: the tests
    around this one)."""
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.api.add_script(counter_script(tmp_path / "s.py", settings="auto-start = true", count=3))
    worker = HandWorker(cluster, reads_accepted_refs=True)
    try:
        worker.send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=3)))
        leases: list[jobs_pb2.Lease] = []
        while len(leases) < 3:
            leases += worker.next_of("leases").leases.items
        first = [result(lease) for lease in leases[:2]]
        worker.send(jobs_pb2.WorkerMessage(results=jobs_pb2.ResultBatch(items=first)))
        ack = worker.next_of("ack").ack
        refs = sorted(zip(ack.accepted_job_ids, ack.accepted_lease_nos, strict=True))
        assert refs == sorted((x.ref.job_id, x.ref.lease_no) for x in leases[:2]) and not ack.items
        ghost = jobs_pb2.Result(ref=jobs_pb2.JobRef(job_id=10**9, lease_no=1), output=b"1")
        again = [first[0], ghost, result(leases[2])]
        worker.send(jobs_pb2.WorkerMessage(results=jobs_pb2.ResultBatch(items=again)))
        ack = worker.next_of("ack").ack
        assert list(zip(ack.accepted_job_ids, ack.accepted_lease_nos, strict=True)) == [
            (leases[2].ref.job_id, leases[2].ref.lease_no)
        ]
        assert [(a.ref.job_id, a.outcome) for a in ack.items] == [
            (leases[0].ref.job_id, jobs_pb2.ACK_OUTCOME_DUPLICATE),
            (10**9, jobs_pb2.ACK_OUTCOME_UNKNOWN),
        ]
    finally:
        worker.close()


def test_a_started_job_past_its_timeout_is_revoked_and_leased_again_as_its_next_attempt(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The server's half of job-timeout, alone: this worker never kills its job (a real worker's own
    watchdog would race the server to it; tests/unit/test_worker_executor.py checks that half)."""
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(
        counter_script(tmp_path / "t.py", job="t", count=1, settings="auto-start = true\njob-timeout = 0.5")
    ).handler.id
    worker = HandWorker(cluster, heartbeat_seconds=0.1)
    try:
        worker.send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=1)))
        (first,) = worker.next_of("leases").leases.items
        assert (first.attempt, first.timeout_seconds) == (1, 0.5)
        worker.send(jobs_pb2.WorkerMessage(started=jobs_pb2.Started(refs=[first.ref])))
        revoke = worker.next_of("revoke").revoke
        assert revoke.reason == "job timeout"
        assert [(r.job_id, r.lease_no) for r in revoke.refs] == [(first.ref.job_id, first.ref.lease_no)]
        # It had started, so the attempt was charged; the job went back to the queue and, the slot
        # being free again, came back to this worker under a new lease number.
        (again,) = worker.next_of("leases").leases.items
        assert (again.ref.job_id, again.attempt) == (first.ref.job_id, 2)
        assert again.ref.lease_no > first.ref.lease_no
        assert [(lease.job_id, lease.lease_no, lease.attempt) for lease in cluster.app.leases(handler_id=hid)] == [
            (again.ref.job_id, again.ref.lease_no, 2)
        ]
        # A late result for the revoked lease is refused; the current one is accepted.
        worker.send(jobs_pb2.WorkerMessage(results=jobs_pb2.ResultBatch(items=[result(first), result(again)])))
        ack = worker.next_of("ack").ack
        assert [a.outcome for a in ack.items] == [jobs_pb2.ACK_OUTCOME_STALE, jobs_pb2.ACK_OUTCOME_ACCEPTED]
    finally:
        worker.close()
    info = cluster.api.wait_state(hid, "finished", timeout=20)
    assert (info.jobs_processed, info.jobs_failed) == (1, 0)


def test_a_stream_the_server_ends_on_purpose_says_why_in_a_goodbye_before_its_status(cluster: Cluster) -> None:
    # A worker write racing the end of the call turns the status a grpc.aio client sees into
    # INTERNAL (grpc/grpc#36066): the reason must come in a message first, where no write can hide it.
    worker = HandWorker(cluster, "leaving-1", heartbeat_seconds=0.02)
    try:
        reply = cluster.api.admin.RemoveWorker(admin_pb2.RemoveWorkerRequest(ref="leaving-1"), timeout=30)
        assert reply.leases_returned == 0
        goodbye = worker.next_of("goodbye")
        assert "removed by the operator" in goodbye.goodbye.reason
        with pytest.raises(StopIteration):
            worker.next()
        assert worker.incoming.code() == grpc.StatusCode.OK
        assert dict(worker.incoming.trailing_metadata())[STREAM_END_KEY] == goodbye.goodbye.reason
    finally:
        worker.close()
