"""A handler raising in process_result fails alone; after a fix it resumes with every
result counted once. tests/integration/test_handler_faults.py covers the
variants (dying, hanging, timing out); this is the one the invariant checker
audits job by job: the failed batch left no trace in the state nor the jobs."""

from __future__ import annotations

import pytest

from netdist.api.v1 import admin_pb2
from tests.faults.conftest import Rig
from tests.faults.tally import tally_script

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_a_handler_raising_in_process_result_fails_alone_and_resumes_exactly(rig: Rig) -> None:
    rig.upload()
    rig.worker_id(rig.worker("w1", slots=2))
    buggy = rig.add("buggy", count=60, raise_at=37)
    healthy = rig.add("healthy", count=60)
    info = rig.api.wait_state(buggy, "failed", timeout=60)
    assert info.message == "RuntimeError: handler bug at 37"
    rig.finish(healthy)
    rig.warmed_up()
    rig.verify(healthy, count=60)
    snap = rig.verify(buggy, count=60, finished=False)
    assert "37" not in snap.state["seen"]

    fixed = rig.api.add_script(tally_script(rig.root / "buggy.py", job="buggy", count=60))
    assert fixed.outcome == "replaced"
    rig.api.control(buggy, admin_pb2.HANDLER_ACTION_ENABLE)
    rig.api.control(buggy, admin_pb2.HANDLER_ACTION_START)
    rig.finish(buggy)
    rig.verify(buggy, count=60)
