"""AdminService.Watch against a real server and real workers: what a run produces, in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2, admin_pb2_grpc
from netdist.channel import ClientSecurity, sync_channel
from netdist.testing import known_token, wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


class Recorder:
    """A watcher that reads its stream in a thread and keeps every response."""

    def __init__(self, address: str, token: str | None = None) -> None:
        self._channel = sync_channel(address, ClientSecurity(token=token or known_token(address)))
        stub = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.replies: list[admin_pb2.WatchResponse] = []
        self.error: grpc.RpcError | None = None
        self._stream = stub.Watch(admin_pb2.WatchRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for reply in self._stream:
                self.replies.append(reply)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def events(self) -> list[admin_pb2.WatchEvent]:
        return [e for r in list(self.replies) for e in r.events]

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(10)
        self._channel.close()


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for r in made:
        r.close()


def _handler_events(events: list[admin_pb2.WatchEvent], hid: str) -> list[tuple[str, str]]:
    return [
        (e.handler.change, e.handler.state) for e in events if e.HasField("handler") and e.handler.handler_id == hid
    ]


def test_watch_streams_a_run_in_order(cluster: Cluster, tmp_path: Path, recorders: list[Recorder]) -> None:
    assert cluster.server is not None
    watcher = Recorder(cluster.server.address)
    recorders.append(watcher)
    wait_until(lambda: watcher.replies, 10, what="the snapshot")
    first = watcher.replies[0]
    assert first.HasField("snapshot") and not first.snapshot.handlers and not first.snapshot.workers

    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "job.py", job="watched", count=40, sleep=0.02)).handler.id
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    cluster.add_worker("w1", slots=2)
    wait_until(lambda: ("state", "finished") in _handler_events(watcher.events(), hid), 60, what="finished")
    cluster.workers[0].stop()
    wait_until(
        lambda: any(e.HasField("worker") and e.worker.change == "disconnected" for e in watcher.events()),
        30,
        what="the worker's disconnect",
    )
    events = watcher.events()
    assert all(not r.HasField("snapshot") for r in watcher.replies[1:]), "one snapshot, first"
    assert [e.at for e in events] == sorted(e.at for e in events)

    # handler: created -> running -> counts rising -> finished, with the final counts before finished
    assert _handler_events(events, hid) == [("created", "idle"), ("state", "running"), ("state", "finished")]
    created = next(e.handler for e in events if e.HasField("handler"))
    assert (created.job_name, created.package, created.handler) == ("watched", "counter", "Counter")
    kinds = [(e.WhichOneof("kind"), e.handler.state if e.HasField("handler") else "") for e in events]
    running_at = kinds.index(("handler", "running"))
    finished_at = kinds.index(("handler", "finished"))
    counts = [
        e.job_counts
        for e in events[running_at:finished_at]
        if e.HasField("job_counts") and e.job_counts.handler_id == hid
    ]
    processed = [c.jobs_processed for c in counts]
    assert processed == sorted(processed) and len(set(processed)) > 2, processed
    assert (counts[-1].jobs_processed, counts[-1].jobs_available, counts[-1].jobs_pending) == (40, 0, 0)
    assert len(counts) < 40, "counts are coalesced, not one event per job"
    assert any(e.HasField("progress") and e.progress.jobs_running > 0 for e in events)

    # worker: connected -> disconnected
    worker_changes = [e.worker.change for e in events if e.HasField("worker")]
    assert worker_changes == ["connected", "disconnected"]
    connected = next(e.worker for e in events if e.HasField("worker"))
    assert (connected.name, connected.slots) == ("w1", 2)
    assert watcher.error is None


def test_a_viewer_may_watch_and_a_worker_token_may_not(cluster: Cluster, recorders: list[Recorder]) -> None:
    assert cluster.server is not None
    viewer = Recorder(cluster.server.address, cluster.make_token("viewer", "dash"))
    recorders.append(viewer)
    wait_until(lambda: viewer.replies, 10, what="the viewer's snapshot")
    worker_token = cluster.server.worker_token_file.read_text().strip()
    refused = Recorder(cluster.server.address, worker_token)
    recorders.append(refused)
    wait_until(lambda: refused.error, 10, what="the refusal")
    assert refused.error is not None and refused.error.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.in_process
def test_a_watcher_that_never_reads_does_not_hold_up_jobs(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    hub = cluster.app.dispatcher.hub
    hub.max_backlog = 50  # so that a stalled watcher is cut off within this run
    with sync_channel(cluster.server.address, ClientSecurity(token=cluster.app.admin_token)) as channel:
        stalled = admin_pb2_grpc.AdminServiceStub(channel).Watch(admin_pb2.WatchRequest())  # never read
        wait_until(lambda: cluster.app.inspect(lambda: hub.watchers) == 1, 10, what="the watcher")
        cluster.api.upload(counter_wheel(tmp_path))
        hid = cluster.api.add_script(counter_script(tmp_path / "job.py", job="busy", count=300)).handler.id
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
        cluster.add_worker("w1", slots=2)
        assert cluster.api.wait_state(hid, "finished", timeout=60).jobs_processed == 300
        stalled.cancel()
    wait_until(lambda: cluster.app.inspect(lambda: hub.watchers) == 0, 10, what="the watcher to be let go")


@pytest.mark.in_process
def test_watchers_past_the_cap_are_refused(cluster: Cluster, recorders: list[Recorder]) -> None:
    assert cluster.server is not None
    hub = cluster.app.dispatcher.hub
    hub.max_watchers = 1
    first = Recorder(cluster.server.address)
    recorders.append(first)
    wait_until(lambda: first.replies, 10, what="the first watcher's snapshot")
    second = Recorder(cluster.server.address)
    recorders.append(second)
    wait_until(lambda: second.error, 10, what="the refusal")
    assert second.error is not None and second.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the most it takes" in (second.error.details() or "")
    assert first.error is None


def test_the_stream_ends_in_order_when_the_server_stops(cluster: Cluster, recorders: list[Recorder]) -> None:
    assert cluster.server is not None
    watcher = Recorder(cluster.server.address)
    recorders.append(watcher)
    wait_until(lambda: watcher.replies, 10, what="the snapshot")
    assert cluster.server.stop() == 0
    watcher._thread.join(10)
    assert not watcher._thread.is_alive() and watcher.error is None, watcher.error
