"""A silently dead peer is noticed within 10 s on both sides, by gRPC keepalive.

A frozen process (SIGSTOP) keeps its TCP connections open and its kernel keeps
acknowledging packets, so nothing but an HTTP/2 ping that goes unanswered
tells the other side. The heartbeat interval is set to a minute here, so that
heartbeats cannot be what notices.
"""

from __future__ import annotations

import signal
import time

import pytest

from netdist.testing import wait_until
from tests.faults.conftest import Rig

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
NOTICED_WITHIN = 10.0
SLOW_HEARTBEAT = ("--heartbeat-interval", "60")


def test_the_server_notices_a_frozen_worker_and_requeues_its_job(rig: Rig) -> None:
    rig.restart_server(0, extra_args=SLOW_HEARTBEAT)
    rig.upload()
    frozen = rig.worker("frozen")
    worker_id = rig.worker_id(frozen)
    gate = rig.gate()
    hid = rig.add("held", count=1, gate=str(gate), gated=[0])  # held running until the gate opens
    wait_until(lambda: rig.api.running_jobs(hid), 30, what="the job to run on the worker")
    rig.warmed_up()

    rig.stop_worker(frozen)
    frozen_at = time.monotonic()
    wait_until(
        lambda: not any(w.connected for w in rig.api.workers() if w.id == worker_id),
        NOTICED_WITHIN + 5,
        what="the server to drop the frozen worker's stream",
    )
    assert time.monotonic() - frozen_at <= NOTICED_WITHIN + 1
    # After the reconnect grace its job goes back and another worker finishes it.
    gate.touch()
    rig.worker("rescuer")
    rig.finish(hid, timeout=30)
    rig.cont_worker(frozen)
    rig.verify(hid, count=1)


def test_a_worker_notices_a_frozen_server_and_reconnects_when_it_wakes(rig: Rig) -> None:
    rig.restart_server(0, extra_args=SLOW_HEARTBEAT)
    rig.upload()
    worker = rig.worker("patient")
    rig.worker_id(worker)
    rig.warmed_up()
    server = rig.server
    server.popen.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        wait_until(
            lambda: "lost connection" in worker.output(),
            NOTICED_WITHIN + 5,
            what="the worker to notice the frozen server",
        )
        assert time.monotonic() - frozen_at <= NOTICED_WITHIN + 1
    finally:
        server.popen.send_signal(signal.SIGCONT)
    hid = rig.add("after", count=20)
    rig.finish(hid, timeout=60)
    rig.verify(hid, count=20)
