"""Faults: new code while running, a worker killed mid-job, the server killed mid-run."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import alive, child_pids, counter_script, counter_wheel, expected_sum


@pytest.mark.in_process
def test_package_reupload_swaps_handler_code_while_running(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path, "1.0"))
    cluster.add_worker("w1", slots=2)
    script = counter_script(tmp_path / "s.py", settings="auto-start = true", count=200, sleep=0.02)
    hid = cluster.api.add_script(script).handler.id
    wait_until(lambda: cluster.api.handler(hid).jobs_processed >= 20, 60, what="some results")
    up = cluster.api.upload(counter_wheel(tmp_path, "2.0"))
    assert up.created and up.package.version == "2.0"
    assert list(up.restarted_handlers) == [hid]
    info = cluster.api.wait_state(hid, "finished", timeout=90)
    # The same instance went on under the new code, with its state and jobs kept.
    assert info.result_summary.startswith("2.0 ")
    assert f"sum={expected_sum(200)} seen=200" in info.result_summary
    assert info.jobs_processed == 200
    log = "\n".join(line.message for line in cluster.api.log(hid))
    assert "counter 2.0 initialized" in log and "restarting the handler host" in log


@pytest.mark.in_process
def test_worker_killed_mid_job_has_its_job_finished_by_another(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    victim = cluster.add_worker("victim")
    script = counter_script(tmp_path / "s.py", settings="auto-start = true", count=6, sleep=1.0)
    hid = cluster.api.add_script(script).handler.id
    running = wait_until(lambda: cluster.api.running_jobs(hid), 30, what="a running job")
    assert running[0].worker_name == "victim"
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait()
    cluster.add_worker("rescuer", slots=2)
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.jobs_processed == 6 and info.jobs_failed == 0
    assert f"sum={expected_sum(6)} seen=6" in info.result_summary
    wait_until(
        lambda: {w.name: w.jobs_done for w in cluster.api.workers()}["rescuer"] >= 1, 10, what="the rescuer's count"
    )
    assert not {w.name: w for w in cluster.api.workers()}["victim"].connected


@pytest.mark.in_process
def test_a_killed_worker_leaves_no_executor_child_behind(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    victim = cluster.add_worker("victim")
    gate = tmp_path / "gate"
    script = counter_script(tmp_path / "s.py", settings="auto-start = true", count=2, gate=str(gate))
    hid = cluster.api.add_script(script).handler.id

    def waiting_job() -> bool:
        return any(job.progress_percent == 42 for job in cluster.api.running_jobs(hid))

    wait_until(waiting_job, 30, what="a job waiting at its gate")
    children = child_pids(victim.popen.pid)
    assert len(children) == 1 and alive(children[0])
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait()
    wait_until(lambda: not alive(children[0]), 2, what="the executor child to die with its worker")
    gate.touch()


@pytest.mark.parametrize("write_delay", ["0", "default"], ids=["every-lease-written", "leases-held-lazily"])
def test_server_killed_mid_run_finishes_with_no_job_lost(cluster: Cluster, tmp_path: Path, write_delay: str) -> None:
    # With --lease-write-delay 0 the store holds every lease out when the server dies, and each must
    # be adopted; with the default most are held lazily and never written (their jobs run again).
    delay_args = ("--lease-write-delay", write_delay) if write_delay != "default" else ()
    cluster.start_server(extra_args=delay_args)
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    cluster.add_worker("w2", slots=2)
    script = counter_script(tmp_path / "s.py", settings="auto-start = true", count=400, sleep=0.01)
    hid = cluster.api.add_script(script).handler.id
    wait_until(lambda: cluster.api.handler(hid).jobs_processed >= 40, 60, what="some results")
    port = cluster.port
    cluster.process.kill()  # SIGKILL: no clean shutdown
    engine = create_engine(cluster.db_url, poolclass=NullPool)
    with engine.connect() as conn:  # the leases the store held when the server died
        held = {(r.id, r.lease_no) for r in conn.execute(text("SELECT id, lease_no FROM jobs WHERE status = 'leased'"))}
    engine.dispose()
    if delay_args:
        assert held, "no lease in the store when the server died: nothing to adopt"
    cluster.start_server(port=port, extra_args=delay_args)
    info = cluster.api.wait_state(hid, "finished", timeout=120)
    # Each result was processed exactly once: the handler's state is saved
    # in the same transaction as the results it processed.
    assert info.jobs_processed == 400 and info.jobs_failed == 0
    assert info.result_summary == f"1.0 sum={expected_sum(400)} seen=400 failures=0"
    wait_until(
        lambda: {w.name for w in cluster.api.workers() if w.connected} == {"w1", "w2"},
        30,
        what="both workers to reconnect",
    )
    # Workers name the leases whose results wait for an ack in their Hello, and adopted
    # leases wait for their workers: no result for a lease the store held was thrown away.
    # (A lease held lazily, never written, that the server died holding never counts: its
    # result is stale.)
    stale = {
        (int(j), int(n)) for j, n in re.findall(r"result for job (\d+) lease (\d+): stale", cluster.process.output())
    }
    assert not stale & held, f"results of stored leases thrown away: {sorted(stale & held)}"
