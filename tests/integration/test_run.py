"""A job script runs to completion on real workers; results are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update

from netdist.api.v1 import admin_pb2
from netdist.server.store.schema import counters, jobs
from netdist.testing import start_worker, wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.in_process
FAR = 5_000_000_000  # past 2**32


def test_job_script_runs_to_completion(cluster: Cluster, tmp_path: Path) -> None:
    up = cluster.api.upload(counter_wheel(tmp_path))
    assert up.created and list(up.package.handlers) == ["Counter"]
    cluster.add_worker("w1", slots=2)
    cluster.add_worker("w2")
    added = cluster.api.add_script(counter_script(tmp_path / "count.py", count=300))
    assert added.outcome == "created"
    hid = added.handler.id
    assert added.handler.state == "idle"
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.jobs_processed == 300 and info.jobs_total == 300 and info.has_total
    assert info.jobs_available == info.jobs_pending == info.jobs_failed == 0
    assert info.result_summary == f"1.0 sum={expected_sum(300)} seen=300 failures=0"
    workers = cluster.api.workers()
    assert {w.name for w in workers} == {"w1", "w2"}
    # Every result was counted for its worker before the handler saw it: the counts are whole at
    # once, those not yet flushed to the store (once a second) included.
    assert sum(w.jobs_done for w in workers) == 300
    # the handler's own line reaches the server's log (written in batches, a moment later)
    wait_until(
        lambda: "counter 1.0 initialized at 0" in "\n".join(line.message for line in cluster.api.log(hid)),
        10,
        what="the handler's log line",
    )


def test_same_script_again_needs_no_update_and_a_new_job_name_is_a_new_instance(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    script = counter_script(tmp_path / "a.py", job="a", count=5)
    first = cluster.api.add_script(script)
    assert cluster.api.add_script(script).outcome == "no update needed"
    changed = cluster.api.add_script(counter_script(tmp_path / "a.py", job="a", count=6))
    assert changed.outcome == "replaced" and changed.handler.id == first.handler.id
    other = cluster.api.add_script(counter_script(tmp_path / "b.py", job="b", count=5))
    assert other.outcome == "created" and other.handler.id != first.handler.id
    assert sorted(h.job_name for h in cluster.api.handlers()) == ["a", "b"]
    assert '"count": 6' in cluster.api.handler("a").custom_settings_json


def test_failed_jobs_are_retried_then_given_to_process_failure(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    script = counter_script(
        tmp_path / "f.py", job="f", settings="auto-start = true\nmax-attempts = 2", count=40, fail_every=10
    )
    hid = cluster.api.add_script(script).handler.id
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.jobs_processed == 36 and info.jobs_failed == 4
    assert "failures=4" in info.result_summary
    failed = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status="failed")).jobs
    assert len(failed) == 4 and all(j.attempts == 2 for j in failed)
    assert all("fails on purpose" in j.error_info.message and j.error_info.type == "ValueError" for j in failed)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_workers_sharing_a_cache_dir_are_distinct_workers(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    for name in ("twin-a", "twin-b"):
        cluster.workers.append(
            start_worker(
                cluster.server.address,
                name=name,
                log_dir=tmp_path / "logs",
                cache_dir=tmp_path / "shared-cache",
                slots=1,
            )
        )
    wait_until(lambda: sum(w.connected for w in cluster.api.workers()) == 2, 30, what="both to connect")
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(
        counter_script(tmp_path / "s.py", settings="auto-start = true", count=40, sleep=0.05)
    ).handler.id
    assert cluster.api.wait_state(hid, "finished", timeout=60).jobs_processed == 40
    workers = cluster.api.workers()
    assert len({w.id for w in workers}) == 2 and all(w.connected for w in workers)
    wait_until(lambda: all(w.jobs_done > 0 for w in cluster.api.workers()), 10, what="both to have worked")


def test_two_handlers_of_one_package_at_once_each_process_every_result_once(cluster: Cluster, tmp_path: Path) -> None:
    # With other handlers running, a handler's results wait a little to gather (runtime.py linger), and
    # the call that hands them over asks for more jobs too (ProcessResults.more): neither may lose a
    # result, hand one over twice, or leave a handler waiting to be asked for its next jobs.
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    ids = [
        cluster.api.add_script(counter_script(tmp_path / f"{job}.py", job=job, count=count)).handler.id
        for job, count in (("a", 400), ("b", 250))
    ]
    for hid in ids:
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    for hid, count in zip(ids, (400, 250), strict=True):
        info = cluster.api.wait_state(hid, "finished", timeout=60)
        assert info.jobs_processed == count and info.jobs_failed == 0
        assert info.result_summary == f"1.0 sum={expected_sum(count)} seen={count} failures=0"


def test_jobs_with_ids_past_32_bits_run_and_are_shown(cluster: Cluster, tmp_path: Path) -> None:
    """Job ids are 64-bit from the store to the worker and back (PostgreSQL's INTEGER columns stopped
    at 2**31 - 1, a day and a quarter of work at 20,000 jobs a second)."""
    engine = create_engine(cluster.db_url)
    with engine.begin() as conn:
        conn.execute(update(counters).where(counters.c.name == "next_job_id").values(value=FAR))
    cluster.start_server()  # a new server takes its ids from the counter
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    hid = cluster.api.add_script(counter_script(tmp_path / "far.py", job="far", count=20)).handler.id
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.jobs_processed == 20 and info.result_summary.startswith(f"1.0 sum={expected_sum(20)} seen=20")
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(jobs.c.id)).scalars())
    engine.dispose()
    assert len(ids) == 20 and ids[0] >= FAR
    shown = cluster.api.admin.GetJob(admin_pb2.GetJobRequest(id=ids[-1]))
    assert shown.id == ids[-1] and shown.status == "processed"
