"""Lease tables built straight in memory by tests of the table and of what reads it."""

from __future__ import annotations

from netdist.jobscript import JobSettings
from netdist.server.lease_model import HandlerSpec, ReadyJob, WorkerInfo
from netdist.server.leases import LeaseTable
from tests.clock import ManualClock


def table_with_worker(jobs: int, *, slots: int) -> LeaseTable:
    """Handler ``h`` running with ``jobs`` available (ids 1..jobs), and worker ``w`` of ``slots`` slots
    connected, asking for just its slots (no prefetch)."""
    table = LeaseTable(clock=ManualClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    settings = JobSettings(package="p", handler="H", job="h")
    spec = HandlerSpec(handler_id="h", job_name="h", script_sha256="0" * 64, environment=(), settings=settings)
    table.add_handler(spec, counts={}, streak=0, active=True)
    table.enqueued("h", jobs)
    table.refilled("h", [ReadyJob(i, 0, 0, b"{}") for i in range(1, jobs + 1)], more=False)
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=slots), [])
    table.set_capacity("w", slots)
    return table
