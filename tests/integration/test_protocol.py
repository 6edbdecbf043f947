"""The worker protocol driven by hand against a real server: credits, acks, duplicates."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2, jobs_pb2, jobs_pb2_grpc
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class HandWorker:
    """A worker stream whose every message the test writes itself."""

    def __init__(self, cluster: Cluster, worker_id: str = "hand-1") -> None:
        self.outgoing: queue.Queue[jobs_pb2.WorkerMessage | None] = queue.Queue()
        self.leased: list[jobs_pb2.Lease] = []
        stub = jobs_pb2_grpc.JobServiceStub(cluster.api.channel)
        self.send(jobs_pb2.WorkerMessage(hello=jobs_pb2.Hello(worker_id=worker_id, name=worker_id, slots=4)))
        self.incoming = stub.Connect(self._requests(), timeout=60)
        assert next(self.incoming).HasField("welcome")

    def _requests(self) -> Iterator[jobs_pb2.WorkerMessage]:
        while (message := self.outgoing.get()) is not None:
            yield message

    def send(self, message: jobs_pb2.WorkerMessage) -> None:
        self.outgoing.put(message)

    def next(self) -> jobs_pb2.ServerMessage:
        return next(self.incoming)

    def next_of(self, kind: str) -> jobs_pb2.ServerMessage:
        """The next message of ``kind``; leases that come first are kept in ``self.leased``."""
        while True:
            message = self.next()
            if message.WhichOneof("kind") == kind:
                return message
            assert message.WhichOneof("kind") == "leases", message
            self.leased += message.leases.items

    def close(self) -> None:
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
    finally:
        worker.close()
