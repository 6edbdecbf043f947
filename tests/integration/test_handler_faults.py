"""A handler's own bugs fail that handler, never the server; its jobs and state survive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import alive, counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
START = "auto-start = true"


@pytest.mark.in_process
def test_raising_and_dying_handlers_fail_alone_and_resume_exactly(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    raising = cluster.api.add_script(
        counter_script(tmp_path / "r.py", job="raising", settings=START, count=60, raise_at=37)
    ).handler.id
    dying = cluster.api.add_script(
        counter_script(tmp_path / "d.py", job="dying", settings=START, count=60, exit_at=21)
    ).handler.id
    healthy = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="healthy", settings=START, count=60)
    ).handler.id

    info = cluster.api.wait_state(raising, "failed", timeout=60)
    assert info.message == "RuntimeError: handler bug at 37"

    def logged() -> bool:
        log = "\n".join(line.message for line in cluster.api.log(raising))
        return "Traceback" in log and "state failed: RuntimeError: handler bug at 37" in log

    wait_until(logged, 10, what="the traceback and the state change in the handler's log")
    info = cluster.api.wait_state(dying, "failed", timeout=60)
    assert info.message == "handler host exited with code 3"
    # The server kept serving: the third handler ran to its end.
    assert cluster.api.wait_state(healthy, "finished", timeout=60).result_summary == (
        f"1.0 sum={expected_sum(60)} seen=60 failures=0"
    )

    # Fixed script (it clears the error), start: each instance finishes with every result
    # counted exactly once (the failed batch was never committed).
    for hid, name in ((raising, "r.py"), (dying, "d.py")):
        job = "raising" if hid == raising else "dying"
        fixed = cluster.api.add_script(counter_script(tmp_path / name, job=job, settings=START, count=60))
        assert fixed.outcome == "replaced" and (fixed.handler.state, fixed.handler.message) == ("stopped", "")
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    for hid in (raising, dying):
        info = cluster.api.wait_state(hid, "finished", timeout=60)
        assert info.result_summary == f"1.0 sum={expected_sum(60)} seen=60 failures=0"
        assert info.jobs_processed == 60


@pytest.mark.in_process
def test_a_hanging_handler_is_killed_on_stop_and_the_server_keeps_serving(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    hung = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="hung", settings=START, count=40, hang_at=5)
    ).handler.id
    wait_until(
        lambda: "hanging at 5" in "\n".join(line.message for line in cluster.api.log(hung)),
        30,
        what="the handler to hang",
    )
    healthy = cluster.api.add_script(counter_script(tmp_path / "ok.py", job="ok", settings=START, count=30)).handler.id
    assert cluster.api.wait_state(healthy, "finished", timeout=60).jobs_processed == 30
    # Stop answers (the host is killed after its grace) and the handler is stopped, not failed.
    assert cluster.api.control(hung, admin_pb2.HANDLER_ACTION_STOP).state == "stopped"
    wait_until(
        lambda: "did not answer within" in "\n".join(line.message for line in cluster.api.log(hung)),
        10,
        what="the kill in the handler's log",
    )
    # Other control still works: the fixed script runs to the end with every result counted once.
    cluster.api.add_script(counter_script(tmp_path / "h.py", job="hung", settings=START, count=40))
    cluster.api.control(hung, admin_pb2.HANDLER_ACTION_START)
    info = cluster.api.wait_state(hung, "finished", timeout=60)
    assert info.result_summary == f"1.0 sum={expected_sum(40)} seen=40 failures=0"


def test_a_hanging_handler_host_does_not_outlive_a_killed_server(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    hung = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="hung", settings=START, count=20, hang_at=3)
    ).handler.id

    def host_pid() -> int | None:
        lines = "\n".join(line.message for line in cluster.api.log(hung))
        found = re.search(r"handler host started \(pid (\d+)\)", lines)
        return int(found.group(1)) if found and "hanging at 3" in lines else None

    pid = wait_until(host_pid, 30, what="the handler to hang")
    assert alive(pid)
    cluster.process.kill()  # SIGKILL: the server cannot stop its hosts; the kernel ends them
    wait_until(lambda: not alive(pid), 2, what="the orphaned host to exit")
    cluster.start_server()  # so the fixture's clean stop has a server to stop


@pytest.mark.in_process
def test_a_handler_that_does_not_answer_in_time_fails_with_the_reason(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_server(handler_call_timeout_seconds=1.5)
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    hung = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="hung", settings=START, count=20, hang_at=3)
    ).handler.id
    info = cluster.api.wait_state(hung, "failed", timeout=30)
    assert info.message == "handler did not answer 'results' within 1.5 s; its host was killed"
    cluster.api.add_script(counter_script(tmp_path / "h.py", job="hung", settings=START, count=20))
    cluster.api.control(hung, admin_pb2.HANDLER_ACTION_START)
    info = cluster.api.wait_state(hung, "finished", timeout=60)
    assert info.result_summary == f"1.0 sum={expected_sum(20)} seen=20 failures=0"
