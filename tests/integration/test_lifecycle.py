"""Handler states and their transitions, on a real server with real workers.

Idle -> Running -> Paused -> Running -> Finished; Running -> Stopped (leases
revoked) -> Disabled (start refused) -> Idle (enabled) -> Running; Failed
stays failed until enabled, even with a schedule; remove forgets a handler.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.in_process
Gates = Callable[[str], Path]
SCHEDULED = "schedule '* * * * * *': starting"


def log_text(cluster: Cluster, hid: str) -> str:
    return "\n".join(f"{line.source}: {line.message}" for line in cluster.api.log(hid))


def running_ids(cluster: Cluster, hid: str) -> set[int]:
    return {j.id for j in cluster.api.running_jobs(hid)}


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_pause_keeps_leases_and_hands_out_nothing_until_started(cluster: Cluster, tmp_path: Path, gates: Gates) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    gate = gates("a")
    added = cluster.api.add_script(counter_script(tmp_path / "a.py", job="a", count=4, gate=str(gate)))
    hid = added.handler.id
    assert added.handler.state == "idle" and added.handler.jobs_available == 0  # idle creates no jobs

    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START).state == "running"
    held = wait_until(
        lambda: len(running_ids(cluster, hid)) == 2 and running_ids(cluster, hid), 30, what="two jobs held at the gate"
    )

    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_PAUSE).state == "paused"
    assert running_ids(cluster, hid) == held  # pause keeps the outstanding leases
    assert {lease.job_id for lease in cluster.app.leases(handler_id=hid)} == held
    assert cluster.app.runtime(hid) is not None  # and its handler host, which takes their results
    gate.touch()  # they finish, and their results are accepted while paused
    wait_until(lambda: cluster.api.handler(hid).jobs_processed == 2, 30, what="the two held jobs processed")

    # Another handler runs to the end on the same worker meanwhile: the paused
    # one had every chance to hand out its two remaining jobs, and did not.
    other = cluster.api.add_script(
        counter_script(tmp_path / "b.py", job="b", settings="auto-start = true", count=6)
    ).handler.id
    cluster.api.wait_state(other, "finished", timeout=30)
    info = cluster.api.handler(hid)
    assert (info.state, info.jobs_available, info.jobs_processed) == ("paused", 2, 2)
    assert not running_ids(cluster, hid)
    code, details = refused(lambda: cluster.api.control(other, admin_pb2.HANDLER_ACTION_PAUSE))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "only a running handler can be paused" in details

    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START).state == "running"
    info = cluster.api.wait_state(hid, "finished", timeout=30)
    assert info.jobs_processed == 4 and info.result_summary == f"1.0 sum={expected_sum(4)} seen=4 failures=0"
    assert info.finished_at >= info.started_at > 0
    lines = ("server: started", "server: state paused", "server: state running", "server: state finished")
    wait_until(
        lambda: all(line in log_text(cluster, hid) for line in lines), 10, what=f"the log to show {lines}"
    )  # the log is written in batches
    assert "revoked" not in "".join(w.output() for w in cluster.workers)


def test_stop_revokes_leases_and_a_disabled_handler_starts_only_once_enabled(
    cluster: Cluster, tmp_path: Path, gates: Gates
) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    worker = cluster.add_worker("w1", slots=2)
    gate = gates("c")
    hid = cluster.api.add_script(
        counter_script(tmp_path / "c.py", job="c", settings="auto-start = true", count=4, gate=str(gate))
    ).handler.id
    wait_until(lambda: len(running_ids(cluster, hid)) == 2, 30, what="two jobs held at the gate")

    info = cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP)
    assert info.state == "stopped" and info.message == "stopped by the operator"
    assert not running_ids(cluster, hid)
    assert not cluster.app.leases(handler_id=hid) and cluster.app.runtime(hid) is None
    assert info.jobs_available == 4 and info.jobs_pending == 0  # revoked jobs are available again
    assert info.package_version == "1.0"  # no host runs it: the version it would start on
    wait_until(
        lambda: "server revoked 2 job(s): stopped by the operator" in worker.output(),
        15,
        what="the revoke to reach the worker",
    )

    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_DISABLE).state == "disabled"
    code, details = refused(lambda: cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "disabled: enable it first" in details
    assert cluster.api.handler(hid).state == "disabled"
    # Uploading the script again (auto-start) does not start a disabled handler either.
    cluster.api.add_script(
        counter_script(tmp_path / "c.py", job="c", settings="auto-start = true", count=4, gate=str(gate), sleep=0.01)
    )
    assert cluster.api.handler(hid).state == "disabled"

    # It had run and was stopped mid-way: enabled, it is stopped again (idle is for one that never ran).
    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_ENABLE).state == "stopped"
    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START).state == "running"
    # The killed children freed the slots: the jobs run again from the start.
    jobs = wait_until(
        lambda: [j for j in cluster.api.running_jobs(hid) if j.progress_percent == 42] or None,
        30,
        what="the jobs running again",
    )
    assert all(j.worker_name == "w1" for j in jobs)
    gate.touch()
    info = cluster.api.wait_state(hid, "finished", timeout=30)
    assert info.jobs_processed == 4 and info.jobs_failed == 0


def test_failed_handler_does_not_start_again_until_enabled(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    settings = 'schedule = "* * * * * *"\nmax-sequenced-errors = 3\nmax-attempts = 1'
    # Failing jobs of 0.1 s on one slot: most jobs are still available when the handler fails.
    hid = cluster.api.add_script(
        counter_script(tmp_path / "f.py", job="f", settings=settings, count=30, fail_every=1, sleep=0.1)
    ).handler.id
    # Started by its schedule (every second), then failed by its errors.
    info = cluster.api.wait_state(hid, "failed", timeout=30)
    assert "max-sequenced-errors = 3" in info.message and info.jobs_available > 10
    listed = {h.id: h for h in cluster.api.handlers()}
    assert listed[hid].state == "failed" and listed[hid].message == info.message
    starts = log_text(cluster, hid).count(SCHEDULED)
    assert starts == 1

    # Two more occurrences of the schedule pass; a failed handler is not started.
    failed_at = info.finished_at
    wait_until(
        lambda: cluster.api.handler(hid).next_start_at > failed_at + 2.5, 15, what="two schedule occurrences to pass"
    )
    info = cluster.api.handler(hid)
    assert info.state == "failed" and log_text(cluster, hid).count(SCHEDULED) == starts

    # Enabled, its error is cleared, it is stopped (it had run) and its schedule starts it (and it fails again).
    info = cluster.api.control(hid, admin_pb2.HANDLER_ACTION_ENABLE)
    assert info.state == "stopped" and info.message == ""
    wait_until(lambda: log_text(cluster, hid).count(SCHEDULED) > starts, 15, what="a scheduled start")
    assert "max-sequenced-errors" in cluster.api.wait_state(hid, "failed", timeout=30).message


def test_remove_revokes_leases_and_forgets_the_handler(cluster: Cluster, tmp_path: Path, gates: Gates) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    worker = cluster.add_worker("w1", slots=2)
    hid = cluster.api.add_script(
        counter_script(tmp_path / "r.py", job="r", settings="auto-start = true", count=5, gate=str(gates("r")))
    ).handler.id
    wait_until(lambda: len(running_ids(cluster, hid)) == 2, 30, what="two jobs held at the gate")
    cluster.api.control("r", admin_pb2.HANDLER_ACTION_REMOVE)  # by job name
    assert not cluster.app.leases() and cluster.app.runtime(hid) is None
    assert cluster.app.inspect(lambda: hid not in cluster.app.dispatcher.table.handlers)  # its queue is forgotten
    assert hid not in {h.id for h in cluster.api.handlers()}
    assert not cluster.api.running_jobs()
    code, details = refused(lambda: cluster.api.handler(hid))
    assert code == grpc.StatusCode.NOT_FOUND and hid in details
    wait_until(lambda: "server revoked 2 job(s): removed" in worker.output(), 15, what="the revoke to reach the worker")
    # The worker is free for other work.
    other = cluster.api.add_script(
        counter_script(tmp_path / "o.py", job="o", settings="auto-start = true", count=3)
    ).handler.id
    assert cluster.api.wait_state(other, "finished", timeout=30).jobs_processed == 3
