"""A worker stream driven by hand: the test writes every message, a thread reads the answers.

Unlike tests/integration/test_protocol.py's HandWorker it heartbeats on its
own (so the server keeps it while the test takes its time) and collects what
the server sends in the background, so a test can wait on leases and acks.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Iterator

import grpc

from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.channel import ClientSecurity, sync_channel
from netdist.testing import known_token, wait_until

HEARTBEAT_SECONDS = 0.1
_CREDENTIALS: dict[tuple[str, str], str] = {}
"""The credential each hand worker was issued, by server address and worker id: later streams present it."""


class HandWorker:
    def __init__(self, address: str, worker_id: str, *, slots: int = 1, held: Iterable[tuple[int, int]] = ()) -> None:
        self.worker_id = worker_id
        self.channel = sync_channel(address, ClientSecurity(token=known_token(address, "worker")))
        self.outgoing: queue.Queue[jobs_pb2.WorkerMessage | None] = queue.Queue()
        self.leases: list[jobs_pb2.Lease] = []
        self.acks: list[jobs_pb2.ResultAck] = []
        self.revoked: list[tuple[int, int]] = []
        self.other: list[jobs_pb2.ServerMessage] = []
        self.error: grpc.RpcError | None = None
        self._closed = threading.Event()
        key = (address, worker_id)
        self.send(
            jobs_pb2.WorkerMessage(
                hello=jobs_pb2.Hello(
                    worker_id=worker_id,
                    name=worker_id,
                    slots=slots,
                    credential=_CREDENTIALS.get(key, ""),
                    held=[jobs_pb2.JobRef(job_id=j, lease_no=n) for j, n in held],
                )
            )
        )
        self.incoming = jobs_pb2_grpc.JobServiceStub(self.channel).Connect(self._requests(), timeout=120)
        first = next(self.incoming)
        assert first.HasField("welcome"), first
        if first.welcome.credential:  # a real worker keeps it in its cache dir
            _CREDENTIALS[key] = first.welcome.credential
        self._reader = threading.Thread(target=self._read, name=f"hand-{worker_id}", daemon=True)
        self._reader.start()
        self._beater = threading.Thread(target=self._beat, name=f"beat-{worker_id}", daemon=True)
        self._beater.start()

    # -- sending ---------------------------------------------------------------------------

    def send(self, message: jobs_pb2.WorkerMessage) -> None:
        self.outgoing.put(message)

    def capacity(self, jobs: int) -> None:
        self.send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=jobs)))

    def started(self, *leases: jobs_pb2.Lease) -> None:
        self.send(jobs_pb2.WorkerMessage(started=jobs_pb2.Started(refs=[lease.ref for lease in leases])))

    def results(self, *items: jobs_pb2.Result) -> list[jobs_pb2.ResultAck]:
        """Send results in one batch; returns their acks, in order."""
        before = len(self.acks)
        self.send(jobs_pb2.WorkerMessage(results=jobs_pb2.ResultBatch(items=items)))
        wait_until(lambda: len(self.acks) >= before + len(items) or self.error, 30, what="the acks")
        assert self.error is None, self.error
        return self.acks[before : before + len(items)]

    def end(self, timeout: float = 30.0) -> None:
        """End the stream in order: every message sent so far arrives, then the server ends its side."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.outgoing.put(None)
        self._reader.join(timeout)
        self._beater.join(10)
        assert not self._reader.is_alive(), "the server did not end the stream"
        self.channel.close()

    def close(self) -> None:
        """End the stream abruptly (as a dropped connection does): no HandBack, nothing more."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.outgoing.put(None)
        self.incoming.cancel()
        self._reader.join(10)
        self._beater.join(10)
        self.channel.close()

    # -- receiving ---------------------------------------------------------------------------

    def wait_leases(self, n: int, timeout: float = 30.0) -> list[jobs_pb2.Lease]:
        wait_until(lambda: len(self.leases) >= n or self.error, timeout, what=f"{n} leases")
        assert self.error is None, self.error
        return list(self.leases)

    def _requests(self) -> Iterator[jobs_pb2.WorkerMessage]:
        while (message := self.outgoing.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for message in self.incoming:
                kind = message.WhichOneof("kind")
                if kind == "leases":
                    self.leases.extend(message.leases.items)
                elif kind == "ack":
                    self.acks.extend(message.ack.items)
                elif kind == "revoke":
                    self.revoked.extend((r.job_id, r.lease_no) for r in message.revoke.refs)
                else:
                    self.other.append(message)
        except grpc.RpcError as exc:
            if not self._closed.is_set():
                self.error = exc

    def _beat(self) -> None:
        while not self._closed.wait(HEARTBEAT_SECONDS):
            self.send(jobs_pb2.WorkerMessage(heartbeat=jobs_pb2.Heartbeat()))


def answer(
    lease: jobs_pb2.Lease,
    *,
    y: int | None = None,
    job_id: int | None = None,
    lease_no: int | None = None,
    error: str = "",
) -> jobs_pb2.Result:
    """A result for ``lease``: the right output unless ``y`` forges it; ``job_id``/``lease_no`` forge the ref."""
    i = json.loads(lease.input)["i"]
    ref = jobs_pb2.JobRef(
        job_id=lease.ref.job_id if job_id is None else job_id,
        lease_no=lease.ref.lease_no if lease_no is None else lease_no,
    )
    if error:
        return jobs_pb2.Result(ref=ref, error=jobs_pb2.JobError(type="Forged", message=error))
    out = {"i": i, "y": i * i + 7 if y is None else y, "pad": ""}
    return jobs_pb2.Result(ref=ref, output=json.dumps(out).encode(), duration_seconds=0.01)


def forged(job_id: int, lease_no: int, i: int, *, error: str = "") -> jobs_pb2.Result:
    """A result for a job this stream never held, with a wrong output (or an error)."""
    ref = jobs_pb2.JobRef(job_id=job_id, lease_no=lease_no)
    if error:
        return jobs_pb2.Result(ref=ref, error=jobs_pb2.JobError(type="Forged", message=error))
    return jobs_pb2.Result(ref=ref, output=json.dumps({"i": i, "y": -1, "pad": ""}).encode())
