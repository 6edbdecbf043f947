"""The event stream as lines for scripts (``netdist-admin events``): one JSON object, or one readable line,
per snapshot entry and per event.

Every JSON object has ``type`` (snapshot, handler, job_counts, summary, worker, progress) and ``time`` (Unix
seconds). The snapshot is a ``snapshot`` line, then a ``handler`` and a ``worker`` line (``change``:
``snapshot``) for each; events follow, each in the order the server sent it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from netdist.adminctl import view
from netdist.adminctl.live_model import LiveModel
from netdist.api.v1 import admin_pb2
from netdist.printable import printable


def json_objects(reply: admin_pb2.WatchResponse) -> Iterator[dict[str, Any]]:
    if reply.HasField("snapshot"):
        snap = reply.snapshot
        yield {
            "type": "snapshot",
            "time": snap.at,
            "handlers": len(snap.handlers),
            "workers": len(snap.workers),
            "interval_seconds": snap.interval_seconds,
        }
        for h in snap.handlers:
            yield {"type": "handler", "time": snap.at, "change": "snapshot", "handler": view.handler_dict(h)}
        for w in snap.workers:
            yield {"type": "worker", "time": snap.at, "change": "snapshot", "worker": view.worker_dict(w)}
    for event in reply.events:
        yield event_object(event)


def event_object(event: admin_pb2.WatchEvent) -> dict[str, Any]:
    kind = event.WhichOneof("kind")
    head: dict[str, Any] = {"type": kind or "unknown", "time": event.at}
    match kind:
        case "handler":
            h = event.handler
            return head | {
                "change": h.change,
                "handler": {
                    "id": h.handler_id,
                    "state": h.state,
                    "message": h.message,
                    "job_name": h.job_name or None,
                    "package": h.package or None,
                    "handler": h.handler or None,
                },
            }
        case "job_counts":
            c = event.job_counts
            return head | {
                "handler_id": c.handler_id,
                "jobs_available": c.jobs_available,
                "jobs_pending": c.jobs_pending,
                "jobs_processed": c.jobs_processed,
                "jobs_failed": c.jobs_failed,
            }
        case "summary":
            r = event.summary
            return head | {
                "handler_id": r.handler_id,
                "jobs_total": r.jobs_total if r.has_total else None,
                "result_summary": r.result_summary,
            }
        case "worker":
            w = event.worker
            return head | {
                "change": w.change,
                "worker": {
                    "id": w.worker_id,
                    "name": w.name or None,
                    "slots": w.slots or None,
                    "labels": dict(w.labels),
                    "hostname": w.hostname or None,
                    "version": w.version or None,
                },
            }
        case "progress":
            p = event.progress
            return head | {
                "worker_id": p.worker_id,
                "jobs_running": p.jobs_running,
                "running": [view.job_dict(j) for j in p.running],
            }
        case _:
            return head


def readable_lines(reply: admin_pb2.WatchResponse, model: LiveModel) -> Iterator[str]:
    """``reply`` as lines for a person; ``model`` (updated here) supplies the names events leave out."""
    if reply.HasField("snapshot"):
        model.apply(admin_pb2.WatchResponse(snapshot=reply.snapshot))
        snap = reply.snapshot
        at = _clock(snap.at)
        yield f"{at} snapshot  {len(snap.handlers)} handler(s), {len(snap.workers)} worker(s)"
        for h in snap.handlers:
            yield (
                f"{at} handler   {_short(h.id)} {h.job_name!r} {h.state}"
                f"{_message(h.message)}  {_counts(h.jobs_available, h.jobs_pending, h.jobs_processed, h.jobs_failed)}"
            )
        for w in snap.workers:
            yield f"{at} worker    {w.name} {'connected' if w.connected else 'disconnected'}, {w.slots} slot(s)"
    for event in reply.events:
        model.apply_event(event)
        yield printable(_event_line(event, model))


def _event_line(event: admin_pb2.WatchEvent, model: LiveModel) -> str:
    at = _clock(event.at)
    match event.WhichOneof("kind"):
        case "handler":
            h = event.handler
            name = h.job_name or model.handler_name(h.handler_id)
            return f"{at} handler   {_short(h.handler_id)} {name!r} {h.change}: {h.state}{_message(h.message)}"
        case "job_counts":
            c = event.job_counts
            counts = _counts(c.jobs_available, c.jobs_pending, c.jobs_processed, c.jobs_failed)
            return f"{at} counts    {_short(c.handler_id)} {model.handler_name(c.handler_id)!r}  {counts}"
        case "summary":
            r = event.summary
            total = f"total {r.jobs_total}" if r.has_total else "total unknown"
            return f"{at} summary   {_short(r.handler_id)} {model.handler_name(r.handler_id)!r}  {total}: {r.result_summary}"
        case "worker":
            w = event.worker
            name = w.name or model.worker_name(w.worker_id) or _short(w.worker_id)
            return f"{at} worker    {name} {w.change}" + (f", {w.slots} slot(s)" if w.change == "connected" else "")
        case "progress":
            p = event.progress
            jobs = ", ".join(f"#{j.id} {j.progress_percent:.0f}%" for j in p.running[:10])
            more = f" (+{p.jobs_running - 10})" if p.jobs_running > 10 else ""
            name = model.worker_name(p.worker_id) or _short(p.worker_id)
            return f"{at} progress  {name} {p.jobs_running} running" + (f": {jobs}{more}" if jobs else "")
        case _:
            return f"{at} (an event this netdist-admin does not know)"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _short(ident: str) -> str:
    return ident[:8]


def _message(message: str) -> str:
    return f" ({message})" if message else ""


def _counts(available: int, pending: int, processed: int, failed: int) -> str:
    return f"available {available}, pending {pending}, processed {processed}, failed {failed}"
