"""A handler gets its results in batches sized by how long its own process_result takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
COUNT = 150


def _batches(cluster: Cluster, hid: str) -> list[int]:
    lines = (line.message for line in cluster.api.log(hid))
    return [int(m.group(1)) for line in lines if (m := re.search(r"took (\d+) results in one call", line))]


@pytest.mark.in_process
def test_a_slow_process_result_gets_small_batches_and_stops_at_once(cluster: Cluster, tmp_path: Path) -> None:
    """At 50 ms a result, 150 results handed over in one call would take 7.5 s, and a stop waits for
    the call at hand only 5 s before it kills the host. Batches of about 0.2 s keep the stop prompt,
    and every result is still processed exactly once."""
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    hid = cluster.api.add_script(
        counter_script(tmp_path / "slow.py", job="slow", settings="auto-start = true", count=COUNT, process_sleep=0.05)
    ).handler.id

    def all_ran_some_processed() -> bool:
        info = cluster.api.handler(hid)
        ran = info.jobs_available == 0 and not cluster.api.running_jobs(hid)
        return ran and 20 <= info.jobs_processed < COUNT // 2

    # In one batch of all 150 the count would go from a few to 150 in one step, 7.5 s later.
    wait_until(all_ran_some_processed, 20, what="every job run and 20 to 74 of their results processed")
    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP).state == "stopped"
    log = "\n".join(line.message for line in cluster.api.log(hid))
    assert "did not answer within" not in log
    stopped_at = cluster.api.handler(hid).jobs_processed
    assert stopped_at < COUNT

    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.result_summary == f"1.0 sum={expected_sum(COUNT)} seen={COUNT} failures=0"
    # The log reaches the store every 0.2 s: wait for the last call's line.
    wait_until(lambda: sum(_batches(cluster, hid)) >= COUNT, 10, what="every call's line in the handler's log")
    batches = _batches(cluster, hid)
    assert sum(batches) == COUNT  # each result once: no call was cut short by a kill
    assert max(batches) <= 4, batches  # 0.2 s of calls at 50 ms a result


@pytest.mark.in_process
def test_the_first_call_after_a_start_hands_over_one_result(cluster: Cluster, tmp_path: Path) -> None:
    """Nothing is known of a handler's pace when it starts: at 0.4 s a result, a first batch of 16
    would be a 6.4 s call, and a stop during it would kill the host (a stop waits 5 s)."""
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    count = 12
    hid = cluster.api.add_script(
        counter_script(
            tmp_path / "slower.py", job="slower", settings="auto-start = true", count=count, process_sleep=0.4
        )
    ).handler.id

    def all_ran() -> bool:
        info = cluster.api.handler(hid)
        return info.jobs_available == 0 and not cluster.api.running_jobs(hid) and info.jobs_processed >= 1

    wait_until(all_ran, 30, what="every job run and a result processed")
    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP).state == "stopped"
    processed = cluster.api.handler(hid).jobs_processed
    assert count - processed >= 2  # more than one result waits for the first call after the start
    wait_until(lambda: sum(_batches(cluster, hid)) == processed, 10, what="every call's line in the log")
    before = len(_batches(cluster, hid))

    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    wait_until(lambda: len(_batches(cluster, hid)) > before, 20, what="the first call after the start")
    assert _batches(cluster, hid)[before] == 1  # of the 2 or more waiting
    assert cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP).state == "stopped"
    assert "did not answer within" not in "\n".join(line.message for line in cluster.api.log(hid))
