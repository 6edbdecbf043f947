"""Each worker id is bound to its own credential: one worker cannot speak for another."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from netdist.api.v1 import admin_pb2, jobs_pb2, jobs_pb2_grpc
from netdist.channel import ClientSecurity, sync_channel
from netdist.server.store.schema import jobs
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = pytest.mark.in_process

IMPOSTOR_TRIES = 50
COUNT = 6


def hello_from(address: str, token: str, hello: jobs_pb2.Hello) -> tuple[grpc.StatusCode, str]:
    """Open a stream with ``hello``; the refusal (or OK once welcomed, then end it)."""
    with sync_channel(address, ClientSecurity(token=token)) as channel:
        stream = jobs_pb2_grpc.JobServiceStub(channel).Connect(iter([jobs_pb2.WorkerMessage(hello=hello)]), timeout=10)
        try:
            next(stream)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        finally:
            stream.cancel()
    return grpc.StatusCode.OK, ""


def test_an_impostor_with_a_real_workers_id_changes_nothing(
    cluster: Cluster, tmp_path: Path, gates: Callable[[str], Path]
) -> None:
    assert cluster.server is not None
    cluster.api.upload(counter_wheel(tmp_path))
    real = cluster.add_worker("real", slots=2)
    gate = gates("impostor")  # the real worker's jobs run (at their gate) all through the impostor's tries
    hid = cluster.api.add_script(
        counter_script(tmp_path / "c.py", settings="auto-start = true\nmax-attempts = 1", count=COUNT, gate=str(gate))
    ).handler.id
    wait_until(lambda: len(cluster.api.running_jobs(hid)) == 2, 30, what="two jobs running on the real worker")
    (before,) = cluster.api.workers()
    running = {j.id for j in cluster.api.running_jobs(hid)}
    worker_token = cluster.server.worker_token_file.read_text().strip()

    answers = []
    for n in range(IMPOSTOR_TRIES):  # no credential, or a made-up one; with the real worker token
        credential = "" if n % 2 else "ndc_" + secrets.token_urlsafe(32)
        hello = jobs_pb2.Hello(worker_id=before.id, name="impostor", slots=8, credential=credential)
        answers.append(hello_from(cluster.server.address, worker_token, hello))
    assert {code for code, _ in answers} == {grpc.StatusCode.PERMISSION_DENIED}
    assert all(f"worker id {before.id} belongs to another worker" in details for _, details in answers)
    assert {j.id for j in cluster.api.running_jobs(hid)} == running  # still the real worker's, still running

    gate.touch()
    info = cluster.api.wait_state(hid, "finished", timeout=90)
    assert f"seen={COUNT} failures=0" in info.result_summary
    engine = create_engine(cluster.db_url, poolclass=NullPool)
    with engine.connect() as conn:
        attempts = [row.attempts for row in conn.execute(select(jobs.c.attempts).where(jobs.c.handler_id == hid))]
    engine.dispose()
    assert attempts == [1] * COUNT  # each job ran once: no lease was lost to the impostor

    def counted() -> admin_pb2.WorkerInfo | None:
        w = cluster.api.workers()[0]
        return w if w.jobs_done == COUNT else None

    after = wait_until(counted, 10, what="the worker's count")  # counts reach the store about once a second
    assert (after.name, after.connected, after.connected_since) == ("real", True, before.connected_since)
    assert "lost connection" not in real.output(), real.output()
    assert cluster.server.output().count("worker real (") == 1  # connected once, never again


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_removed_worker_is_let_go_and_issued_a_new_credential(cluster: Cluster) -> None:
    assert cluster.server is not None
    worker = cluster.add_worker("w1")
    wait_until(lambda: any(w.connected for w in cluster.api.workers()), 30, what="the worker to connect")
    kept = cluster.root / "cache" / "w1" / "worker-id.credential"
    # The server counts the worker connected when its Welcome is sent; the worker writes the file after.

    def kept_credential() -> str | None:
        return kept.read_text().strip() if kept.exists() else None

    first = wait_until(kept_credential, 30, what="the worker to keep its credential")
    assert first.startswith("ndc_") and stat.S_IMODE(kept.stat().st_mode) == 0o600
    (w,) = cluster.api.workers()

    cluster.api.admin.RemoveWorker(admin_pb2.RemoveWorkerRequest(ref="w1"), timeout=10)

    def renewed() -> str | None:
        text = kept.read_text().strip()
        return text if text != first else None

    second = wait_until(renewed, 30, what="the worker to be issued a new credential")
    wait_until(lambda: cluster.api.workers()[0].connected, 30, what="the worker to be back")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and worker.alive()

    token = cluster.server.worker_token_file.read_text().strip()
    for old in ("", first):  # the id is bound to the new credential now: the old one speaks for nobody
        code, details = hello_from(
            cluster.server.address, token, jobs_pb2.Hello(worker_id=w.id, name="w1", slots=1, credential=old)
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED and "belongs to another worker" in details
    assert second not in cluster.server.output() and second not in worker.output()
