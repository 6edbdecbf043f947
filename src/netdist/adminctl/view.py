"""Protobuf messages as plain JSON values, for ``--json`` and the tables.

Times on the wire are unix seconds with 0 meaning unset; here they become
``None`` or the float. Fields holding JSON text are parsed.
"""

from __future__ import annotations

import json
from typing import Any

from netdist.api.v1 import admin_pb2, packages_pb2


def when(seconds: float) -> float | None:
    """A wire time as JSON: ``None`` when unset (0)."""
    return seconds or None


def parse_json(text: str) -> Any:
    """A JSON text field: parsed, ``None`` when empty, the raw text when malformed."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def handler_dict(h: admin_pb2.HandlerInfo, *, with_result: bool = False) -> dict[str, Any]:
    """``with_result``: the saved state too (GetHandler sends it; ListHandlers does not)."""
    shown = ("handler_state", "handler_state_bytes", "handler_state_shown") if with_result else ()
    result = result_dict(h)
    return {
        "id": h.id,
        "package": h.package,
        "package_version": h.package_version,
        "handler": h.handler,
        "job_name": h.job_name,
        "state": h.state,
        "state_label": h.state_label or h.state,
        "message": h.message,
        "jobs_available": h.jobs_available,
        "jobs_pending": h.jobs_pending,
        "jobs_processed": h.jobs_processed,
        "jobs_failed": h.jobs_failed,
        "jobs_total": h.jobs_total if h.has_total else None,
        "result_summary": h.result_summary,
        "script_sha256": h.script_sha256,
        "script_uploaded_by": h.script_uploaded_by,
        "settings": parse_json(h.settings_json),
        "custom_settings": parse_json(h.custom_settings_json),
        "created_at": when(h.created_at),
        "started_at": when(h.started_at),
        "finished_at": when(h.finished_at),
        "next_start_at": when(h.next_start_at),
        "running": [job_dict(j) for j in h.running],
        "unservable_platforms": list(h.unservable_platforms),
        "waiting": h.waiting or None,
        **{key: result[key] for key in shown},
    }


def result_dict(h: admin_pb2.HandlerInfo) -> dict[str, Any]:
    """A handler's answer: its summary and saved state (``None`` when over the size the server sends)."""
    shown = bool(h.handler_state_json) or h.handler_state_bytes == 0
    return {
        "id": h.id,
        "job_name": h.job_name,
        "state": h.state,
        "state_label": h.state_label or h.state,
        "result_summary": h.result_summary,
        "handler_state": parse_json(h.handler_state_json) if shown else None,
        "handler_state_bytes": h.handler_state_bytes,
        "handler_state_shown": shown,
    }


def error_dict(e: admin_pb2.JobErrorInfo) -> dict[str, Any]:
    return {"type": e.type, "message": e.message, "traceback": e.traceback}


def job_dict(j: admin_pb2.JobInfo) -> dict[str, Any]:
    done = j.status in ("succeeded", "processed")
    return {
        "id": j.id,
        "handler_id": j.handler_id,
        "job_name": j.job_name or None,
        "status": j.status,
        "attempts": j.attempts,
        "worker_id": j.worker_id or None,
        "worker_name": j.worker_name or None,
        "progress_percent": round(j.progress_percent, 2) if j.status == "leased" or done else None,
        "progress_text": j.progress_text,
        "leased_at": when(j.leased_at),
        "finished_at": when(j.finished_at) if j.status != "leased" else None,
        "duration_seconds": j.duration_seconds if j.status != "leased" and j.finished_at else None,
        "input": parse_json(j.input_json),
        "output": parse_json(j.output_json),
        "error": {"type": j.error_info.type, "message": j.error_info.message} if j.HasField("error_info") else None,
    }


def attempt_dict(a: admin_pb2.JobAttempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "lease_no": a.lease_no,
        "charged": a.charged,
        "outcome": a.outcome,
        "worker_id": a.worker_id or None,
        "worker_name": a.worker_name or None,
        "started_at": when(a.started_at),
        "finished_at": when(a.finished_at),
        "duration_seconds": a.duration_seconds if a.has_duration else None,
        "error": error_dict(a.error) if a.HasField("error") else None,
    }


def job_detail_dict(j: admin_pb2.GetJobResponse) -> dict[str, Any]:
    return {
        "id": j.id,
        "handler_id": j.handler_id,
        "job_name": j.job_name,
        "script_name": j.script_name,
        "status": j.status,
        "attempts": j.attempts,
        "progress_percent": round(j.progress_percent, 2),
        "progress_text": j.progress_text,
        "input": parse_json(j.input_json),
        "input_clipped": j.input_clipped,
        "output": parse_json(j.output_json),
        "output_clipped": j.output_clipped,
        "extra": parse_json(j.extra_json),
        "attempt_history": [attempt_dict(a) for a in j.attempt_history],
        "attempts_not_shown": j.attempts_not_shown,
    }


def worker_dict(w: admin_pb2.WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "hostname": w.hostname,
        "version": w.version,
        "labels": dict(w.labels),
        "slots": w.slots,
        "connected": w.connected,
        "disabled": w.disabled,
        "connected_since": when(w.connected_since),
        "last_seen": when(w.last_seen),
        "jobs_running": w.jobs_running,
        "jobs_done": w.jobs_done,
        "jobs_failed": w.jobs_failed,
        "running": [job_dict(j) for j in w.running],
        "platform": w.platform or None,
        "unservable_handlers": list(w.unservable_handlers),
    }


def wheel_dict(w: packages_pb2.WheelInfo) -> dict[str, Any]:
    return {
        "filename": w.filename,
        "sha256": w.sha256,
        "size": w.size,
        "distribution": w.distribution,
        "version": w.version,
    }


def package_dict(p: packages_pb2.PackageInfo) -> dict[str, Any]:
    return {
        "name": p.name,
        "version": p.version,
        "current": p.current,
        "handlers": list(p.handlers),
        "wheel": wheel_dict(p.wheel),
        "dependencies": [wheel_dict(d) for d in p.dependencies],
        "uploaded_at": when(p.uploaded_at),
        "uploaded_by": p.uploaded_by,
    }


def status_dict(s: admin_pb2.GetStatusResponse) -> dict[str, Any]:
    return {
        "version": s.version,
        "address": s.address,
        "database": s.database,
        "started_at": when(s.started_at),
        "packages": s.packages,
        "handlers": s.handlers,
        "handlers_running": s.handlers_running,
        "workers_connected": s.workers_connected,
        "heartbeat_interval_seconds": s.heartbeat_interval_seconds,
        "jobs_available": s.jobs_available,
        "jobs_pending": s.jobs_pending,
        "jobs_processed": s.jobs_processed,
        "jobs_failed": s.jobs_failed,
        "handlers_finished_with_failures": s.handlers_finished_with_failures,
        "store_state": s.store_state,
        "store_problem": s.store_problem,
        "store_unavailable_since": when(s.store_unavailable_since) if s.store_unavailable_since else None,
    }


def log_dict(line: admin_pb2.LogLine) -> dict[str, Any]:
    return {
        "at": when(line.at),
        "level": line.level,
        "source": line.source,
        "message": line.message,
    }


def audit_dict(e: admin_pb2.AuditEntry) -> dict[str, Any]:
    return {
        "at": e.at,
        "token_name": e.token_name,
        "role": e.role,
        "peer": e.peer,
        "method": e.method,
        "target": e.target,
        "outcome": e.outcome,
        "detail": e.detail,
    }
