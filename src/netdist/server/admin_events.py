"""AdminService's event stream: ``Watch``, a snapshot and then what changes (:mod:`netdist.server.event_hub`).

The snapshot is what ListHandlers and ListWorkers answer; the events after it
come from memory (the hub), never from polling the store. A watcher that falls
more than the hub's ``max_backlog`` events behind is ended with
RESOURCE_EXHAUSTED (watch again for a fresh snapshot); the server's cap on
watchers refuses the next one with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar, cast

import grpc

from netdist.api.v1 import admin_pb2, admin_pb2_grpc
from netdist.errors import ResourceExhaustedError
from netdist.server.dispatcher import Dispatcher
from netdist.server.event_hub import HandlerChange, HandlerSummary, JobCounts, Stamped, WorkerChange, WorkerProgress
from netdist.server.grpc_errors import to_status
from netdist.server.job_views import MAX_SHOWN_TEXT
from netdist.server.states import JobStatus

MAX_EVENTS_PER_MESSAGE = 500
"""Events one WatchResponse carries; a longer backlog goes out in several."""
T = TypeVar("T")


class EventAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Mixed into AdminService, which sets ``dispatcher``."""

    dispatcher: Dispatcher
    _last_batch: tuple[list[Stamped], list[admin_pb2.WatchResponse]] = ([], [])

    @to_status
    async def Watch(
        self, request: admin_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.WatchResponse]:
        hub = self.dispatcher.hub
        watcher = hub.subscribe()  # before the snapshot: a change in between comes as an event
        try:
            handlers = await _answer(self.ListHandlers(admin_pb2.ListHandlersRequest(), context))
            workers = await _answer(self.ListWorkers(admin_pb2.ListWorkersRequest(), context))
            yield admin_pb2.WatchResponse(
                snapshot=admin_pb2.WatchSnapshot(
                    at=time.time(),
                    handlers=handlers.handlers,
                    workers=workers.workers,
                    interval_seconds=hub.interval_seconds,
                )
            )
            while True:
                batch = await watcher.take()
                if watcher.closed:
                    return
                if watcher.overflowed:
                    raise ResourceExhaustedError(
                        f"this watcher fell more than {hub.max_backlog} events behind (it did not read its "
                        "stream); watch again for a fresh snapshot"
                    )
                for reply in self._replies(batch):
                    yield reply
        finally:
            hub.unsubscribe(watcher)

    def _replies(self, batch: list[Stamped]) -> list[admin_pb2.WatchResponse]:
        """The responses that carry ``batch``. Watchers that keep up take the same events at the same
        tick: they share the responses built for the first of them (built once, not once per watcher)."""
        last, replies = self._last_batch
        if len(last) == len(batch) and all(a is b for a, b in zip(last, batch, strict=True)):
            return replies
        replies = [
            admin_pb2.WatchResponse(events=[_wire(item) for item in batch[start : start + MAX_EVENTS_PER_MESSAGE]])
            for start in range(0, len(batch), MAX_EVENTS_PER_MESSAGE)
        ]
        self._last_batch = (batch, replies)
        return replies


async def _answer(reply: T | Awaitable[T]) -> T:
    return await cast(Awaitable[T], reply)


def _wire(item: Stamped) -> admin_pb2.WatchEvent:
    """The event as sent: built once, for every watcher."""
    if item.wire is None:
        item.wire = _event(item)
    return cast(admin_pb2.WatchEvent, item.wire)


def _event(item: Stamped) -> admin_pb2.WatchEvent:
    e = item.event
    match e:
        case HandlerChange():
            return admin_pb2.WatchEvent(
                at=item.at,
                handler=admin_pb2.HandlerEvent(
                    handler_id=e.handler_id,
                    change=e.change,
                    state=e.state,
                    message=e.message,
                    job_name=e.job_name,
                    package=e.package,
                    handler=e.handler,
                ),
            )
        case JobCounts():
            return admin_pb2.WatchEvent(
                at=item.at,
                job_counts=admin_pb2.JobCountsEvent(
                    handler_id=e.handler_id,
                    jobs_available=e.available,
                    jobs_pending=e.pending,
                    jobs_processed=e.processed,
                    jobs_failed=e.failed,
                ),
            )
        case HandlerSummary():
            return admin_pb2.WatchEvent(
                at=item.at,
                summary=admin_pb2.SummaryEvent(
                    handler_id=e.handler_id,
                    jobs_total=e.total or 0,
                    has_total=e.total is not None,
                    result_summary=e.summary[:MAX_SHOWN_TEXT],  # as the store keeps it
                ),
            )
        case WorkerChange():
            return admin_pb2.WatchEvent(
                at=item.at,
                worker=admin_pb2.WorkerEvent(
                    worker_id=e.worker_id,
                    change=e.change,
                    name=e.name,
                    slots=e.slots,
                    labels=dict(e.labels),
                    hostname=e.hostname,
                    version=e.version,
                ),
            )
        case WorkerProgress():
            return admin_pb2.WatchEvent(
                at=item.at,
                progress=admin_pb2.ProgressEvent(
                    worker_id=e.worker_id,
                    jobs_running=e.jobs_running,
                    running=[
                        admin_pb2.JobInfo(
                            id=j.job_id,
                            handler_id=j.handler_id,
                            status=JobStatus.LEASED,
                            attempts=j.attempt,
                            worker_id=e.worker_id,
                            progress_percent=j.percent,
                            progress_text=j.text,
                            leased_at=j.leased_at,
                        )
                        for j in e.running
                    ],
                ),
            )
