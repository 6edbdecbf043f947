"""A job that failed on one worker is retried on another, with real workers, on SQLite and PostgreSQL.

Seen from outside: with ``max-attempts = 3``, a ``process`` that raises only on
lab-1 (a broken host) and a healthy lab-2 connected, 10 of 40 jobs failed for
good, each with its three attempts on lab-1 within a second.
"""

from __future__ import annotations

from pathlib import Path

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_wheel

SCRIPT = """# /// script
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "{job}"
# auto-start = true
# max-attempts = 3
# [tool.netdist.settings]
# count = {count}
# sleep = {sleep}
# ///
import os
import time


def process(job_input, ctx):
    # The worker runs the job script from its own cache directory, named after it here.
    if os.sep + os.path.join("cache", "lab-1") + os.sep in __file__:
        raise RuntimeError("lab-1 is broken")
    time.sleep(job_input["sleep"])
    return {{"double": job_input["i"] * 2}}
"""


def add(cluster: Cluster, tmp_path: Path, job: str, *, count: int, sleep: float) -> str:
    path = tmp_path / f"{job}.py"
    path.write_text(SCRIPT.format(job=job, count=count, sleep=sleep))
    return str(cluster.api.add_script(path).handler.id)


def connected(cluster: Cluster, *names: str) -> dict[str, str]:
    """Worker name -> id, once all of ``names`` are connected."""

    def all_there() -> dict[str, str] | None:
        found = {w.name: w.id for w in cluster.api.workers() if w.connected}
        return found if set(names) <= set(found) else None

    return wait_until(all_there, 30, what=f"workers {names} to connect")


def attempts(cluster: Cluster, hid: str, status: str) -> dict[int, list[tuple[str, str]]]:
    """(outcome, worker name) of every attempt of the handler's jobs in ``status``, by job id."""
    listed = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status=status, limit=1000))
    found = {}
    for job in listed.jobs:
        reply = cluster.api.admin.GetJob(admin_pb2.GetJobRequest(id=job.id), timeout=30)
        found[job.id] = [(a.outcome, a.worker_name) for a in reply.attempt_history]
    return found


def test_a_job_that_fails_on_a_broken_worker_is_retried_on_the_healthy_one(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("lab-1")
    cluster.add_worker("lab-2")
    connected(cluster, "lab-1", "lab-2")
    hid = add(cluster, tmp_path, "broken-host", count=40, sleep=0.05)

    info = cluster.api.wait_state(hid, "finished", timeout=60)
    history = attempts(cluster, hid, "processed")
    assert (info.jobs_processed, info.jobs_failed) == (40, 0), attempts(cluster, hid, "failed")
    retried = {job_id: runs for job_id, runs in history.items() if len(runs) > 1}
    assert retried, "lab-1 failed no job: the test proves nothing"
    for job_id, runs in history.items():
        assert runs[-1] == ("succeeded", "lab-2"), (job_id, runs)
        assert all(run == ("errored", "lab-1") for run in runs[:-1]), (job_id, runs)
    assert max(len(runs) for runs in retried.values()) == 2, retried  # one failure each: never back to lab-1


def test_a_worker_alone_still_retries_a_failing_job_up_to_max_attempts(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("lab-1")
    connected(cluster, "lab-1")
    hid = add(cluster, tmp_path, "alone", count=3, sleep=0.0)

    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert (info.jobs_processed, info.jobs_failed) == (0, 3)
    history = attempts(cluster, hid, "failed")
    assert len(history) == 3
    for job_id, runs in history.items():
        assert [worker for _, worker in runs] == ["lab-1"] * 3, (job_id, runs)
