"""AdminService's job calls: list jobs, and show one job whole with every attempt."""

from __future__ import annotations

import json
from typing import Any

import grpc

from netdist.api.v1 import admin_pb2, admin_pb2_grpc
from netdist.errors import InvalidArgumentError, NotFoundError
from netdist.server.dispatcher import Dispatcher
from netdist.server.grpc_errors import to_status
from netdist.server.job_views import MAX_LISTED_JOBS, MAX_SHOWN_TEXT, running_job
from netdist.server.states import JobStatus
from netdist.server.store import catalog, job_history
from netdist.server.store import jobs as job_store
from netdist.server.store.facade import Store

MAX_SHOWN_DOCUMENT = 256 * 1024
"""A job's input or output as ``jobs show`` gets it: the start of it (the reply stays well under 4 MiB)."""
MAX_SHOWN_EXTRA = 64 * 1024
MAX_SHOWN_TRACEBACK = 8000
MAX_LISTED_RESULT = 1000
"""A listed job's output or error message: the start of it. With its input (MAX_SHOWN_TEXT) and no
traceback (``jobs show`` has it), a listing of MAX_LISTED_JOBS stays as large as it was before outputs."""
WAITING_PAGE = 1000
"""Ids read at a time for ``jobs list --status available`` (the jobs held lazily are left out of each)."""
MAX_SHOWN_ATTEMPTS = 50
"""The newest earlier attempts ``jobs show`` gets; it says how many older ones it left out."""
_LOST = {
    "JobTimeout": "timed out",
    "WorkerLost": "worker lost",
    "WorkerRemoved": "worker removed",
    "Revoked": "revoked",
    "HandedBack": "handed back",
}
"""Why a lease ended without a result (server/leases.py), as an attempt's outcome."""
_DONE = (JobStatus.SUCCEEDED, JobStatus.PROCESSED)
_FAILED = (JobStatus.ERRORED, JobStatus.FAILED)


class JobAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Mixed into AdminService, which sets these."""

    store: Store
    dispatcher: Dispatcher

    @to_status
    async def ListJobs(
        self, request: admin_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListJobsResponse:
        handler_id = None
        if request.handler_ref:
            handler_id = (await self.store.read(catalog.resolve_handler, request.handler_ref)).id
        if request.status and request.status not in {s.value for s in JobStatus}:
            raise InvalidArgumentError(
                f"'status': unknown job status {request.status!r}; one of {', '.join(s.value for s in JobStatus)}"
            )
        if request.status in ("", JobStatus.LEASED):
            names = {w.worker_id: w.name for w in self.dispatcher.table.workers.values()}
            leases = self.dispatcher.table.leases_of(handler_id=handler_id)
            shown = leases[: min(request.limit or MAX_LISTED_JOBS, MAX_LISTED_JOBS)]
            job_names = await self.store.read(job_history.job_names, {lease.handler_id for lease in shown})
            out = []
            for lease in shown:
                info = running_job(lease, names)
                info.job_name = job_names.get(lease.handler_id, "")
                out.append(info)
            return admin_pb2.ListJobsResponse(jobs=out)
        limit = min(request.limit or 100, MAX_LISTED_JOBS)
        if request.status == JobStatus.AVAILABLE:
            rows = await self._waiting(handler_id, limit)
        else:
            rows = await self.store.read(job_store.listing, handler_id, request.status, limit)
        names = await self.store.read(job_history.worker_names, (r.worker_id for r in rows))
        job_names = await self.store.read(job_history.job_names, {r.handler_id for r in rows})
        return admin_pb2.ListJobsResponse(jobs=[_listed(r, names, job_names) for r in rows])

    async def _waiting(self, handler_id: str | None, limit: int) -> list[Any]:
        """Up to ``limit`` available jobs, newest first, leaving out those held lazily (server/leases.py):
        the store shows them available, but they are out. Their ids are read a page at a time until
        ``limit`` are found or the store has no more (jobs held lazily never make a page short), then
        the rows of those found."""
        current = self.dispatcher.table.leases
        waiting: list[int] = []
        before: int | None = None
        while len(waiting) < limit:
            page = await self.store.read(job_store.available_refs, handler_id, WAITING_PAGE, before_id=before)
            waiting.extend(j for j, n in page if (held := current.get(j)) is None or held.lease_no <= n)
            if len(page) < WAITING_PAGE:
                break
            before = page[-1][0]
        return await self.store.read(job_store.listed_rows, waiting[:limit])

    @to_status
    async def GetJob(
        self, request: admin_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetJobResponse:
        record = await self.store.read(job_history.read_job, request.id, max_attempts=MAX_SHOWN_ATTEMPTS)
        if record is None:
            raise NotFoundError(f"no job {request.id} (never created, or removed with its handler or by retention)")
        r = record.row
        names = record.worker_names
        history = [_earlier(a, names) for a in record.earlier]
        percent, text = (100.0, "") if r.status in _DONE else (0.0, "")
        lease = self.dispatcher.table.leases.get(r.id)
        if lease is not None and not (
            (r.status == JobStatus.LEASED and lease.lease_no == r.lease_no)
            or (r.status == JobStatus.AVAILABLE and lease.lease_no > r.lease_no)  # held lazily (server/leases.py)
        ):
            lease = None
        status = JobStatus.LEASED if lease is not None else r.status
        if status == JobStatus.LEASED:
            worker_id, lease_no, started_at = r.worker_id or "", r.lease_no, r.leased_at or 0.0
            if lease is not None:
                percent, text = lease.progress_percent, lease.progress_text
                worker_id, lease_no, started_at = lease.worker_id, lease.lease_no, lease.leased_at
                holder = self.dispatcher.table.workers.get(worker_id)
                names.setdefault(worker_id, holder.name if holder is not None else "")
            history.append(
                admin_pb2.JobAttempt(
                    attempt=r.attempts + 1,
                    lease_no=lease_no,
                    charged=True,
                    outcome="running",
                    worker_id=worker_id,
                    worker_name=names.get(worker_id, ""),
                    started_at=started_at,
                )
            )
        elif r.status in _DONE or r.status in _FAILED:
            history.append(_final(r, names))
        input_json, input_clipped = _clip(r.input, MAX_SHOWN_DOCUMENT)
        output_json, output_clipped = _clip(r.output or "", MAX_SHOWN_DOCUMENT)
        return admin_pb2.GetJobResponse(
            id=r.id,
            handler_id=r.handler_id,
            job_name=record.job_name,
            script_name=record.script_name,
            status=status,
            attempts=r.attempts,
            input_json=input_json,
            input_clipped=input_clipped,
            output_json=output_json,
            output_clipped=output_clipped,
            extra_json=_clip(r.extra or "", MAX_SHOWN_EXTRA)[0],
            progress_percent=percent,
            progress_text=text,
            attempt_history=history,
            attempts_not_shown=record.not_shown,
        )


def _clip(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def error_info(
    error_json: str | None, *, traceback_chars: int, message_chars: int = MAX_SHOWN_TEXT
) -> admin_pb2.JobErrorInfo | None:
    """A stored error (JSON text) as a structured error; whatever text is not an error object becomes its message."""
    if not error_json:
        return None
    try:
        value: Any = json.loads(error_json)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return admin_pb2.JobErrorInfo(type="Error", message=error_json[:message_chars])
    return admin_pb2.JobErrorInfo(
        type=str(value.get("type", ""))[:200],
        message=str(value.get("message", ""))[:message_chars],
        traceback=str(value.get("traceback", ""))[-traceback_chars:] if traceback_chars else "",
    )


def _outcome(error: admin_pb2.JobErrorInfo | None) -> str:
    if error is None:
        return "succeeded"
    return _LOST.get(error.type, "errored")


def _earlier_outcome(outcome: str, error_type: str) -> str:
    """An earlier attempt's outcome as the latest one's is named: a job the worker stopped at its job-timeout
    (an error it reported) "timed out", as one whose lease the server ended at it."""
    if outcome == "errored":
        return "timed out" if error_type == "JobTimeout" else "errored"
    return _LOST.get(error_type, "lost")


def _earlier(a: Any, names: dict[str, str]) -> admin_pb2.JobAttempt:
    error = admin_pb2.JobErrorInfo(
        type=a.error_type[:200],
        message=a.error_message[:MAX_SHOWN_TEXT],
        traceback=a.error_traceback[-MAX_SHOWN_TRACEBACK:],
    )
    return admin_pb2.JobAttempt(
        attempt=a.attempt,
        lease_no=a.lease_no,
        charged=a.charged,
        outcome=_earlier_outcome(a.outcome, a.error_type),
        worker_id=a.worker_id or "",
        worker_name=names.get(a.worker_id or "", ""),
        started_at=a.started_at or 0.0,
        finished_at=a.finished_at,
        duration_seconds=a.duration_seconds or 0.0,
        has_duration=a.duration_seconds is not None,
        error=error,
    )


def _final(r: Any, names: dict[str, str]) -> admin_pb2.JobAttempt:
    """The attempt that ended the job, from its row."""
    error = error_info(r.error_json, traceback_chars=MAX_SHOWN_TRACEBACK)
    return admin_pb2.JobAttempt(
        attempt=max(r.attempts, 1),
        lease_no=r.lease_no,
        charged=True,
        outcome=_outcome(error),
        worker_id=r.worker_id or "",
        worker_name=names.get(r.worker_id or "", ""),
        started_at=r.leased_at or 0.0,
        finished_at=r.finished_at or 0.0,
        duration_seconds=r.duration_seconds or 0.0,
        has_duration=r.duration_seconds is not None,
        error=error,
    )


def _listed(r: Any, names: dict[str, str], job_names: dict[str, str]) -> admin_pb2.JobInfo:
    return admin_pb2.JobInfo(
        id=r.id,
        handler_id=r.handler_id,
        job_name=job_names.get(r.handler_id, ""),
        status=r.status,
        attempts=r.attempts,
        worker_id=r.worker_id or "",
        worker_name=names.get(r.worker_id or "", ""),
        progress_percent=100.0 if r.status in _DONE else 0.0,
        leased_at=r.leased_at or 0.0,
        finished_at=r.finished_at or 0.0,
        duration_seconds=r.duration_seconds or 0.0,
        input_json=r.input[:MAX_SHOWN_TEXT],
        output_json=(r.output or "")[:MAX_LISTED_RESULT],
        error_info=error_info(r.error_json, traceback_chars=0, message_chars=MAX_LISTED_RESULT),
    )
