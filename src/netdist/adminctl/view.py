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


def handler_dict(h: admin_pb2.HandlerInfo) -> dict[str, Any]:
    return {
        "id": h.id,
        "package": h.package,
        "package_version": h.package_version,
        "handler": h.handler,
        "job_name": h.job_name,
        "state": h.state,
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
    }


def job_dict(j: admin_pb2.JobInfo) -> dict[str, Any]:
    return {
        "id": j.id,
        "handler_id": j.handler_id,
        "status": j.status,
        "attempts": j.attempts,
        "worker_id": j.worker_id or None,
        "worker_name": j.worker_name or None,
        "progress_percent": round(j.progress_percent, 2),
        "progress_text": j.progress_text,
        "leased_at": when(j.leased_at),
        "input": parse_json(j.input_json),
        "error": j.error or None,
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
        "jobs_available": s.jobs_available,
        "jobs_pending": s.jobs_pending,
        "jobs_processed": s.jobs_processed,
        "jobs_failed": s.jobs_failed,
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
