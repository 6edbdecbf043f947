"""How jobs look in AdminService replies: bounded, whatever the store or a worker holds."""

from __future__ import annotations

from netdist.api.v1 import admin_pb2
from netdist.server.lease_model import Lease
from netdist.server.states import JobStatus

MAX_LISTED_JOBS = 500
"""Most jobs one ListJobs answers: with their text clipped to MAX_SHOWN_TEXT, about 2 MB at most (a client
takes 4 MiB)."""
MAX_RUNNING_LISTED = 100
"""Most running jobs one handler's or worker's entry lists (its count is exact)."""
MAX_SHOWN_TEXT = 2000
"""A job's input or error as listed: the start of it."""


def running_job(lease: Lease, names: dict[str, str]) -> admin_pb2.JobInfo:
    """A leased job as the lease table holds it, with its worker's name and progress."""
    return admin_pb2.JobInfo(
        id=lease.job_id,
        handler_id=lease.handler_id,
        status=JobStatus.LEASED,
        attempts=lease.attempt,
        worker_id=lease.worker_id,
        worker_name=names.get(lease.worker_id, ""),
        progress_percent=lease.progress_percent,
        progress_text=lease.progress_text,
        leased_at=lease.leased_at,
        input_json=lease.input[: 4 * MAX_SHOWN_TEXT].decode("utf-8", "replace")[:MAX_SHOWN_TEXT],
    )
