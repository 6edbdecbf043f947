"""A handler alone gets a large batch of results and is asked for its next jobs in the same call.

Traced in a 50,000-job benchmark: a handler's loop made one host call for a batch of results
and another for new jobs, each waiting for its own group commit (tens of ms under load), and
both workers sat idle with every job done while the loop went through its results. A batch of
MORE_WITH_RESULTS results or more now asks for jobs in the same call (one call, one commit); a
few results alone (one job in flight) still commit before the next job is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netdist.api.v1 import admin_pb2
from netdist.server.host_protocol import ProcessResults
from netdist.server.runtime import MORE_WITH_RESULTS, RunningHandler
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.in_process
COUNT = 3000


def test_a_large_batch_of_results_asks_for_more_jobs_in_the_same_call(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, bool]] = []  # (results handed over, more asked), in order
    original = RunningHandler._call

    async def recording(self: RunningHandler, request: Any) -> Any:
        if isinstance(request, ProcessResults):
            calls.append((len(request.items), request.more))
        return await original(self, request)

    monkeypatch.setattr(RunningHandler, "_call", recording)
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "count.py", count=COUNT)).handler.id
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    cluster.add_worker("w1", slots=4)  # its jobs are made first: results come faster than one at a time

    info = cluster.api.wait_state(hid, "finished", timeout=120)
    assert info.jobs_processed == COUNT and info.jobs_failed == 0
    assert info.result_summary == f"1.0 sum={expected_sum(COUNT)} seen={COUNT} failures=0"
    assert sum(n for n, _ in calls) == COUNT
    assert all(n >= MORE_WITH_RESULTS for n, more in calls if more)  # a few results alone: no more
    assert any(more for n, more in calls if n >= MORE_WITH_RESULTS), calls
