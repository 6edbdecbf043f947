"""A handler's own bugs fail that handler, never the server; its jobs and state survive."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
START = "auto-start = true"


def test_raising_and_dying_handlers_fail_alone_and_resume_exactly(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    raising = cluster.api.add_script(
        counter_script(tmp_path / "r.py", job="raising", settings=START, count=60, raise_at=37)).handler.id
    dying = cluster.api.add_script(
        counter_script(tmp_path / "d.py", job="dying", settings=START, count=60, exit_at=21)).handler.id
    healthy = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="healthy", settings=START, count=60)).handler.id

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
        f"1.0 sum={expected_sum(60)} seen=60 failures=0")

    # Fixed script, enable, start: each instance finishes with every result
    # counted exactly once (the failed batch was never committed).
    for hid, name in ((raising, "r.py"), (dying, "d.py")):
        job = "raising" if hid == raising else "dying"
        fixed = cluster.api.add_script(counter_script(tmp_path / name, job=job, settings=START, count=60))
        assert fixed.outcome == "replaced" and fixed.handler.state == "failed"
        assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_ENABLE).state == "idle"
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    for hid in (raising, dying):
        info = cluster.api.wait_state(hid, "finished", timeout=60)
        assert info.result_summary == f"1.0 sum={expected_sum(60)} seen=60 failures=0"
        assert info.jobs_processed == 60
