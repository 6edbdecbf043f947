"""What a worker sends has limits: a Hello over them, or with control characters in what it names, is
refused and stores nothing; a worker row from before the limits cannot break ``workers list``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy

from netdist import fields
from netdist.api.v1 import admin_pb2, jobs_pb2, jobs_pb2_grpc
from netdist.server.store.schema import workers
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.integration.test_protocol import HandWorker
from tests.support import counter_script, counter_wheel

pytestmark = pytest.mark.in_process

HOSTILE_HELLOS: list[tuple[dict[str, object], str]] = [
    ({"name": "w\x1b[2J"}, "Hello.name holds a control character (U+001B at position 1)"),
    ({"name": "w1\nw2   fake   row"}, "Hello.name holds a control character (U+000A at position 2)"),
    ({"hostname": "\x1b]0;pwned\x07"}, "Hello.hostname holds a control character (U+001B at position 0)"),
    ({"labels": {"si\x1bte": "lab"}}, "Hello.labels key holds a control character (U+001B at position 2)"),
    ({"labels": {"site": "l\u202eab"}}, "Hello.labels['site'] holds a control character (U+202E at position 1)"),
    ({"worker_id": "ev\x9bil"}, "Hello.worker_id holds a control character (U+009B at position 2)"),
    ({"hostname": "h" * 3_000_000}, "Hello.hostname is longer than 200 characters (3000000)"),
    ({"labels": {f"k{i}": "v" * 10 for i in range(100_000)}}, "Hello.labels holds 100000 labels; at most 64"),
    ({"labels": {"k": "v" * 201}}, "Hello.labels['k'] is longer than 200 characters (201)"),
]


def refused(cluster: Cluster, hello: jobs_pb2.Hello) -> tuple[grpc.StatusCode, str]:
    stub = jobs_pb2_grpc.JobServiceStub(cluster.api.channel)

    def one() -> Iterator[jobs_pb2.WorkerMessage]:
        yield jobs_pb2.WorkerMessage(hello=hello)

    with pytest.raises(grpc.RpcError) as err:
        list(stub.Connect(one(), timeout=60))
    return err.value.code(), err.value.details()


def test_hostile_hellos_are_refused_naming_the_field_and_nothing_is_stored(cluster: Cluster) -> None:
    for fields_, message in HOSTILE_HELLOS:
        base: dict[str, object] = {"worker_id": "evil-1", "name": "evil", "slots": 1, "hostname": "h"}
        base.update(fields_)
        code, details = refused(cluster, jobs_pb2.Hello(**base))  # type: ignore[arg-type]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(message), (code, details)
    # Past the server's 4 MiB message limit gRPC refuses it before any code of ours reads it.
    code, details = refused(cluster, jobs_pb2.Hello(worker_id="evil-2", slots=1, hostname="h" * 20_000_000))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details, (code, details)
    assert cluster.api.workers() == []  # nothing was stored
    worker = HandWorker(cluster, "fine-1")  # and the server still serves
    try:
        assert [w.name for w in cluster.api.workers()] == ["fine-1"]
    finally:
        worker.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_progress_text_is_clipped_and_stripped_of_controls(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "s.py", settings="auto-start = true", count=3)).handler.id
    worker = HandWorker(cluster)
    try:
        worker.send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=1)))
        message = worker.next()
        assert message.WhichOneof("kind") == "leases", message
        ref = message.leases.items[0].ref
        worker.send(jobs_pb2.WorkerMessage(started=jobs_pb2.Started(refs=[ref])))
        text = "50%\x1b[2J\r\nFORGED\u202e" + "x" * 100_000
        worker.send(
            jobs_pb2.WorkerMessage(
                progress=jobs_pb2.ProgressBatch(items=[jobs_pb2.Progress(ref=ref, percent=50.0, text=text)])
            )
        )
        shown = wait_until(
            lambda: [j.progress_text for j in cluster.api.running_jobs(hid) if j.progress_text],
            20,
            what="the progress text",
        )
        assert shown[0].startswith("50%[2J  FORGEDxx")
        assert len(shown[0]) <= fields.MAX_PROGRESS_TEXT and fields.UNSAFE.search(shown[0]) is None
    finally:
        worker.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_worker_row_from_before_the_limits_cannot_break_workers_list(cluster: Cluster) -> None:
    engine = sqlalchemy.create_engine(cluster.db_url)
    labels = {f"label-{i}": "v" * 100 for i in range(100_000)} | {"k" * 1000: "v" * 1000}
    try:
        with engine.begin() as conn:  # as an older server stored it: no limits on the way in
            conn.execute(
                sqlalchemy.insert(workers).values(
                    id="old-1",
                    name="n" * 10_000,
                    labels_json=json.dumps(labels),
                    slots=1,
                    hostname="h" * 20_000_000,
                    version="v" * 10_000,
                )
            )
    finally:
        engine.dispose()
    reply = cluster.api.admin.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=60)
    (w,) = reply.workers
    assert (w.name, w.hostname, w.version) == ("n" * 200, "h" * 200, "v" * 50)
    assert len(w.labels) == fields.MAX_LABELS
    assert w.labels["k" * fields.MAX_LABEL_KEY] == "v" * fields.MAX_LABEL_VALUE
    assert all(len(k) <= fields.MAX_LABEL_KEY and len(v) <= fields.MAX_LABEL_VALUE for k, v in w.labels.items())
    assert reply.ByteSize() < 64 * 1024
