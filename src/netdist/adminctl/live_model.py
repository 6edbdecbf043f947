"""The server as the event stream tells it: a snapshot, kept up to date by each event.

``netdist-admin watch`` draws from it; ``events`` uses it for the names in its lines.
"""

from __future__ import annotations

from netdist.api.v1 import admin_pb2
from netdist.state_labels import state_label


class LiveModel:
    """Handlers and workers by id, as of the last response applied."""

    def __init__(self) -> None:
        self.handlers: dict[str, admin_pb2.HandlerInfo] = {}
        self.workers: dict[str, admin_pb2.WorkerInfo] = {}
        self.at = 0.0  # the time of the newest snapshot or event

    def apply(self, reply: admin_pb2.WatchResponse) -> None:
        if reply.HasField("snapshot"):
            snap = reply.snapshot
            self.handlers = {h.id: h for h in snap.handlers}
            self.workers = {w.id: w for w in snap.workers}
            self.at = snap.at
        for event in reply.events:
            self.apply_event(event)

    def apply_event(self, event: admin_pb2.WatchEvent) -> None:
        self.at = max(self.at, event.at)
        match event.WhichOneof("kind"):
            case "handler":
                self._handler(event.handler)
            case "job_counts":
                c = event.job_counts
                h = self.handlers.get(c.handler_id)
                if h is not None:
                    h.jobs_available = c.jobs_available
                    h.jobs_pending = c.jobs_pending
                    h.jobs_processed = c.jobs_processed
                    h.jobs_failed = c.jobs_failed
                    _relabel(h)
            case "summary":
                r = event.summary
                h = self.handlers.get(r.handler_id)
                if h is not None:
                    h.jobs_total, h.has_total, h.result_summary = r.jobs_total, r.has_total, r.result_summary
            case "worker":
                self._worker(event.worker, event.at)
            case "progress":
                p = event.progress
                w = self.workers.get(p.worker_id)
                if w is not None:
                    w.jobs_running = p.jobs_running
                    del w.running[:]
                    w.running.extend(p.running)
                    w.last_seen = event.at
            case _:  # a kind this client does not know (a newer server): nothing to draw
                pass

    def _handler(self, e: admin_pb2.HandlerEvent) -> None:
        if e.change == "removed":
            self.handlers.pop(e.handler_id, None)
            return
        h = self.handlers.get(e.handler_id)
        if h is None:
            h = self.handlers[e.handler_id] = admin_pb2.HandlerInfo(id=e.handler_id)
        h.state = e.state
        h.message = e.message
        _relabel(h)
        if e.job_name:
            h.job_name, h.package, h.handler = e.job_name, e.package, e.handler

    def _worker(self, e: admin_pb2.WorkerEvent, at: float) -> None:
        w = self.workers.get(e.worker_id)
        if w is None:
            w = self.workers[e.worker_id] = admin_pb2.WorkerInfo(id=e.worker_id)
        if e.name:
            w.name, w.slots, w.hostname, w.version = e.name, e.slots, e.hostname, e.version
            w.labels.clear()
            w.labels.update(e.labels)
        match e.change:
            case "connected":
                w.connected, w.connected_since, w.last_seen = True, at, at
            case "disconnected" | "removed":
                w.connected, w.jobs_running = False, 0
                del w.running[:]
            case "disabled":
                w.connected, w.disabled, w.jobs_running = False, True, 0
                del w.running[:]
            case "enabled":
                w.disabled = False
            case _:
                pass

    def handler_name(self, handler_id: str) -> str:
        h = self.handlers.get(handler_id)
        return h.job_name if h is not None else ""

    def worker_name(self, worker_id: str) -> str:
        w = self.workers.get(worker_id)
        return w.name if w is not None else ""


def _relabel(h: admin_pb2.HandlerInfo) -> None:
    """The label as the server would give it now (a snapshot's goes stale with the first event)."""
    h.state_label = state_label(h.state, processed=h.jobs_processed, failed=h.jobs_failed)
