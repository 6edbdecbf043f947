"""More streams, longer heartbeat intervals: the server keeps all heartbeats together under its rate.

Seen from outside (bench/idle_streams.py): 10,000 idle streams heartbeating every 4 s sent the server 2,500
messages a second, and two real workers beside them ran at 0.84 of their rate alone. Here the server's
interval is 0.3 s and its rate 4 heartbeats a second, so the third stream stretches it to 0.75 s.
"""

from __future__ import annotations

import json
import time

import pytest

from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.integration.test_protocol import HandWorker

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.in_process]


def connected(cluster: Cluster) -> set[str]:
    return {w.name for w in cluster.api.workers() if w.connected}


def test_a_growing_fleet_is_told_a_longer_interval_and_given_the_silence_it_allows(cluster: Cluster) -> None:
    cluster.start_server(max_heartbeats_per_second=4.0)
    cluster.add_worker("w1")
    wait_until(lambda: "w1" in connected(cluster), 30, what="w1 to connect")
    first = HandWorker(cluster, "hand-1")  # sends nothing after its Hello
    seen_last = time.monotonic()
    second = HandWorker(cluster, "hand-2", heartbeat_seconds=0.6)
    try:
        assert first.welcome.heartbeat_interval_seconds == 0.5  # 2 streams at 4 a second
        assert second.welcome.heartbeat_interval_seconds == 0.75  # 3: at least twice the 0.3 s told before
        assert first.next_of("settings").settings.heartbeat_interval_seconds == 0.75  # so the others hear it
        wait_until(
            lambda: "the server asks for a heartbeat every 0.75 s (it was 0.3 s)" in cluster.logs(),
            10,
            what="the real worker to take the new interval",
        )
        # The silent stream is dropped after 3 of its 0.75 s, not the 0.9 s of the configured interval.
        wait_until(lambda: "hand-1" not in connected(cluster), 10, what="the silent stream to be dropped")
        assert time.monotonic() - seen_last > 2.0
        assert "worker hand-1 sent nothing for 2.25 s; dropping its stream" in cluster.logs()
        # The real worker, beating every 0.75 s now, and hand-2 every 0.6 s stay.
        assert {"w1", "hand-2"} <= connected(cluster)
        assert cluster.logs().count("sent nothing for") == 1  # hand-1 alone
        # The operator sees the interval the workers were told (2 streams would be 0.5 s for a newcomer).
        status = cluster.admin_cli("status")
        assert "2 connected, heartbeat every 0.75 s" in status.stdout, status.stdout + status.stderr
        listed = json.loads(cluster.admin_cli("status", "--json").stdout)
        assert (listed["workers_connected"], listed["heartbeat_interval_seconds"]) == (2, 0.75)
    finally:
        first.close()
        second.close()
