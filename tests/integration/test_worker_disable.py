"""An operator disables a worker: it is let go, its jobs finish elsewhere, and it is refused until enabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.in_process


def by_name(cluster: Cluster) -> dict[str, admin_pb2.WorkerInfo]:
    return {w.name: w for w in cluster.api.workers()}


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_disabled_worker_is_refused_until_enabled(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    shady = cluster.add_worker("shady", slots=2)
    hid = cluster.api.add_script(
        counter_script(tmp_path / "s.py", settings="auto-start = true", count=8, sleep=0.4)
    ).handler.id
    wait_until(lambda: len(cluster.api.running_jobs(hid)) == 2, 30, what="two jobs on the worker")
    reply = cluster.api.admin.DisableWorker(admin_pb2.DisableWorkerRequest(ref="shady"), timeout=10)
    assert reply.leases_returned == 2
    shady_id = by_name(cluster)["shady"].id
    # Back in the queue at once (not at a timeout); a lease may be out to no other worker yet.
    assert all(lease.worker_id != shady_id for lease in cluster.app.leases(handler_id=hid))
    cluster.add_worker("good")
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert f"sum={expected_sum(8)} seen=8" in info.result_summary
    workers = by_name(cluster)
    assert workers["shady"].disabled and not workers["shady"].connected
    wait_until(lambda: "disabled" in shady.output(), 20, what="the worker to be told why")
    # It was told it was removed and may connect again, then refused as disabled.
    assert "disabled by the operator: it may not connect until enabled" in shady.output()
    assert "removed by the operator" not in shady.output()

    cluster.api.admin.EnableWorker(admin_pb2.EnableWorkerRequest(ref="shady"), timeout=10)

    def back() -> admin_pb2.WorkerInfo | None:
        info = by_name(cluster)["shady"]
        return info if info.connected else None

    reconnected = wait_until(back, 30, what="the worker to come back")
    assert not reconnected.disabled
