"""A running handler with available jobs and idle workers says why its jobs wait: ``handlers show``,
``handlers list`` and ``--json``, from a real server with real workers.

Seen from outside: ``clients-allowed = [{ label = "tpu" }]`` with no such worker (a label typo looks
the same), and an ``idle-time`` window, both showed ``running``, ``N available, 0 pending``, idle
workers, and nothing anywhere said why. (The daily budget's reason: tests/faults/test_policy_clock.py.)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the lease table's view only
WIDE = {"COLUMNS": "300"}  # one line per row, as a wide terminal shows it
TPU_ONLY = 'auto-start = true\nclients-allowed = [{ label = "tpu" }]'


def waiting(cluster: Cluster, hid: str, reason: str) -> None:
    wait_until(lambda: cluster.api.handler(hid).waiting == reason, 30, what=f"handler {hid} to wait: {reason}")


def test_handlers_say_why_their_available_jobs_wait(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    tpu = cluster.api.add_script(counter_script(tmp_path / "t.py", job="tpu", settings=TPU_ONLY, count=3)).handler.id
    waiting(cluster, tpu, "no worker connected")
    cluster.add_worker("w1", labels={"cpu": "1"})
    cluster.add_worker("w2")
    not_allowed = 'no connected worker is allowed (clients-allowed = [{ label = "tpu" }]; 2 connected: w1 [cpu=1], w2 [no labels])'
    waiting(cluster, tpu, not_allowed)

    now = datetime.now().astimezone()  # the server's zone: the same machine
    window = f'idle-time = "{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"'
    idle = cluster.api.add_script(
        counter_script(tmp_path / "i.py", job="idle", settings=f"auto-start = true\n{window}", count=3)
    ).handler.id
    in_window = f"idle-time window until {now + timedelta(hours=1):%H:%M}"
    waiting(cluster, idle, in_window)
    free = cluster.api.add_script(counter_script(tmp_path / "f.py", job="free", settings="auto-start = true", count=3))
    cluster.api.wait_state(free.handler.id, "finished", timeout=30)  # the workers are idle, not stuck
    for hid in (tpu, idle):
        info = cluster.api.handler(hid)
        assert (info.state, info.jobs_available, info.jobs_pending) == ("running", 3, 0)

    shown = cluster.admin_cli("handlers", "show", "tpu", env=WIDE)
    assert shown.returncode == 0, shown.stderr
    assert f"waiting          {not_allowed}" in shown.stdout, shown.stdout
    listed = cluster.admin_cli("handlers", "list", env=WIDE)
    assert listed.returncode == 0, listed.stderr
    assert f"waiting: {in_window}" in listed.stdout and f"waiting: {not_allowed}" in listed.stdout, listed.stdout
    as_json = cluster.admin_cli("handlers", "list", "--json")
    by_job = {h["job_name"]: h["waiting"] for h in json.loads(as_json.stdout)}
    assert by_job == {"tpu": not_allowed, "idle": in_window, "free": None}

    cluster.add_worker("w3", labels={"tpu": "v4"})  # the label it asks for: its jobs go, the reason goes
    assert cluster.api.wait_state(tpu, "finished", timeout=30).waiting == ""
    assert cluster.api.handler(idle).waiting == in_window
