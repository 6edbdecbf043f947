"""Progress from ``ctx.progress`` reaches the admin views; the workers listing; removing a worker."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = pytest.mark.in_process
Gates = Callable[[str], Path]


def admin_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.admin_cli(*args)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_progress_reaches_the_jobs_and_workers_listings(cluster: Cluster, tmp_path: Path, gates: Gates) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2, labels={"zone": "b"})
    gate = gates("p")
    hid = cluster.api.add_script(
        counter_script(tmp_path / "p.py", job="p", settings="auto-start = true", count=3, gate=str(gate))
    ).handler.id

    # Each job reports 1..41 in a burst, then 42 while it waits at its gate.
    def at_gate() -> list[admin_pb2.JobInfo] | None:
        jobs = cluster.api.running_jobs(hid)
        return jobs if len(jobs) == 2 and all(j.progress_percent == 42 for j in jobs) else None

    jobs = wait_until(at_gate, 30, what="two jobs at 42 %")
    assert {(j.progress_text, j.worker_name, j.handler_id) for j in jobs} == {("waiting at the gate", "w1", hid)}

    listed = admin_cli(cluster, "jobs", "list", "--handler", hid, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["id"] for r in rows) == sorted(j.id for j in jobs)
    assert all(
        r["progress_percent"] == 42
        and r["progress_text"] == "waiting at the gate"
        and r["status"] == "leased"
        and r["worker_name"] == "w1"
        for r in rows
    )

    (w1,) = cluster.api.workers()
    assert (w1.name, dict(w1.labels), w1.slots, w1.connected, w1.jobs_running) == ("w1", {"zone": "b"}, 2, True, 2)
    assert 0 < w1.connected_since <= w1.last_seen <= time.time() + 1
    assert {(r.handler_id, r.progress_percent) for r in w1.running} == {(hid, 42)}

    # The handler's own view lists its running jobs with their progress too.
    shown = cluster.api.handler(hid)
    assert {(r.id, r.progress_percent, r.progress_text) for r in shown.running} == {
        (j.id, 42, "waiting at the gate") for j in jobs
    }
    detail = admin_cli(cluster, "handlers", "show", hid)
    assert detail.returncode == 0 and "42%" in detail.stdout, detail.stdout
    # So does the listing of every handler, unless the caller reads states and counts alone.
    (full,) = [h for h in cluster.api.handlers() if h.id == hid]
    (bare,) = [h for h in cluster.api.handlers(running=False) if h.id == hid]
    assert sorted(r.id for r in full.running) == sorted(j.id for j in jobs) and list(bare.running) == []
    assert (bare.state, bare.jobs_pending, bare.jobs_available) == (full.state, full.jobs_pending, full.jobs_available)

    gate.touch()
    assert cluster.api.wait_state(hid, "finished", timeout=30).jobs_processed == 3
    failing = cluster.api.add_script(
        counter_script(
            tmp_path / "f.py", job="f", settings="auto-start = true\nmax-attempts = 1", count=2, fail_every=1
        )
    ).handler.id
    cluster.api.wait_state(failing, "finished", timeout=30)
    # Per-worker counts are flushed to the store about once a second.
    wait_until(lambda: cluster.api.workers()[0].jobs_failed == 2, 10, what="the failed count")
    (w1,) = cluster.api.workers()
    assert (w1.jobs_done, w1.jobs_failed, w1.jobs_running, list(w1.running)) == (3, 2, 0, [])


def test_workers_remove_revokes_and_returns_its_leases(cluster: Cluster, tmp_path: Path, gates: Gates) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    doomed = cluster.add_worker("doomed", slots=2)
    gate = gates("r")
    hid = cluster.api.add_script(
        counter_script(tmp_path / "r.py", job="r", settings="auto-start = true", count=2, gate=str(gate))
    ).handler.id

    def two_running() -> list[admin_pb2.JobInfo] | None:
        jobs = cluster.api.running_jobs(hid)
        return jobs if len(jobs) == 2 else None

    held = wait_until(two_running, 30, what="two jobs at the gate")
    assert {j.worker_name for j in held} == {"doomed"}

    reply = cluster.api.admin.RemoveWorker(admin_pb2.RemoveWorkerRequest(ref="doomed"), timeout=30)
    assert reply.leases_returned == 2
    # The revoke reached the worker before its stream was closed: it stopped those jobs.
    wait_until(
        lambda: "server revoked 2 job(s): worker removed" in doomed.output(), 15, what="the revoke on the worker"
    )
    # It says why it lost the stream in the server's words, not "InvalidStateError: RPC already finished".
    lost = wait_until(
        lambda: next((ln for ln in doomed.output().splitlines() if "lost connection" in ln), None),
        15,
        what="the worker to say it lost the stream",
    )
    assert "InvalidStateError" not in lost and "removed by the operator" in lost, lost
    # The jobs went back to the queue; they are leased anew and finish.
    gate.touch()
    cluster.add_worker("rescuer")
    info = cluster.api.wait_state(hid, "finished", timeout=30)
    assert info.jobs_processed == 2 and info.jobs_failed == 0
    # The removed worker may come back and run them first; the rescuer is up before the teardown stops it
    # (stopped while it still imports, it dies of the signal: CI saw "processes did not stop cleanly").
    wait_until(lambda: any(w.name == "rescuer" and w.connected for w in cluster.api.workers()), 30, what="the rescuer")
    processed = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status="processed")).jobs
    assert sorted(j.id for j in processed) == sorted(j.id for j in held)
