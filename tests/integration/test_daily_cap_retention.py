"""``max-time-per-client-per-day`` holds across a restart whatever retention deleted, on SQLite and
PostgreSQL, with a real server process and real workers.

Seen from outside: a server with ``--keep-processed 5``, a daily cap of 1 s and jobs of 0.25 s: 8 of
40 jobs done before a restart (4 per worker, the cap reached), 12 after it (6 per worker). A restarted
server rebuilt each worker's run time of the day from the jobs still stored, and retention had
deleted most of those that counted.
"""

from __future__ import annotations

from pathlib import Path

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

RETENTION = ("--keep-processed", "5", "--retention-interval", "0.2")


def processed_rows(cluster: Cluster, hid: str) -> int:
    """The handler's processed jobs the store still holds (retention deletes the others)."""
    listed = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status="processed", limit=1000))
    return len(listed.jobs)


def run_other_handler(cluster: Cluster, tmp_path: Path, job: str) -> None:
    """Another handler's jobs run to the end on the same workers: they were free all along."""
    other = cluster.api.add_script(
        counter_script(tmp_path / f"{job}.py", job=job, settings="auto-start = true", count=20)
    ).handler.id
    cluster.api.wait_state(other, "finished", timeout=60)


def test_the_daily_cap_holds_after_a_restart_that_follows_retention(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_server(extra_args=RETENTION)
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    cluster.add_worker("w2")
    capped = counter_script(
        tmp_path / "capped.py",
        job="capped",
        settings="auto-start = true\nmax-time-per-client-per-day = 1",
        count=40,
        sleep=0.25,
    )
    hid = cluster.api.add_script(capped).handler.id
    # Four jobs of 0.25 s spend a worker's second of the day: eight for the two of them.
    wait_until(lambda: cluster.api.handler(hid).jobs_processed >= 8, 60, what="both workers to spend their budget")
    run_other_handler(cluster, tmp_path, "other")
    before = cluster.api.handler(hid)
    assert before.state == "running" and before.jobs_available > 0
    wait_until(lambda: processed_rows(cluster, hid) <= 5, 30, what="retention to delete the oldest processed jobs")
    assert before.jobs_processed > 5  # some of the day's run time was in jobs retention deleted

    cluster.start_server(port=cluster.port, extra_args=RETENTION)
    wait_until(lambda: sum(w.connected for w in cluster.api.workers()) == 2, 30, what="the workers to come back")
    run_other_handler(cluster, tmp_path, "again")  # the workers are back and free ...
    after = cluster.api.handler(hid)
    assert after.jobs_processed == before.jobs_processed, (before.jobs_processed, after.jobs_processed)  # ... yet idle
