"""AdminService: what netdist-admin speaks. Every view reads the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import grpc

import netdist
from netdist.api.v1 import admin_pb2
from netdist.errors import InvalidArgumentError, NetDistError
from netdist.fields import control_character
from netdist.server.admin_deps import DepsAdmin
from netdist.server.admin_events import EventAdmin
from netdist.server.admin_job_logs import JobLogAdmin
from netdist.server.admin_jobs import JobAdmin
from netdist.server.admin_workers import WorkerAdmin
from netdist.server.audit import AuditLog, audited
from netdist.server.deps_lock import unservable
from netdist.server.dispatcher import Dispatcher
from netdist.server.grpc_errors import to_status
from netdist.server.job_views import MAX_RUNNING_LISTED, running_job
from netdist.server.lease_model import Lease, shown_counts
from netdist.server.manager import HandlerManager
from netdist.server.reply_deadline import answer_by
from netdist.server.states import HandlerState, JobStatus
from netdist.server.store import audit as audit_store
from netdist.server.store import catalog
from netdist.server.store import jobs as job_store
from netdist.server.store.facade import Store
from netdist.server.waiting import waiting_reason
from netdist.state_labels import state_label

MAX_SCRIPT_BYTES = 1024 * 1024
MAX_FILENAME_CHARS = 255
MAX_AUDIT = 1000
MAX_SHOWN_STATE = 256 * 1024
"""A handler's saved state is sent (by GetHandler) up to this size; past it only its size is."""
_SERVICE = "AdminService"
_ACTIONS = {
    admin_pb2.HANDLER_ACTION_START: "start",
    admin_pb2.HANDLER_ACTION_STOP: "stop",
    admin_pb2.HANDLER_ACTION_PAUSE: "pause",
    admin_pb2.HANDLER_ACTION_ENABLE: "enable",
    admin_pb2.HANDLER_ACTION_DISABLE: "disable",
    admin_pb2.HANDLER_ACTION_REMOVE: "remove",
}


class AdminService(JobAdmin, WorkerAdmin, JobLogAdmin, EventAdmin, DepsAdmin):
    def __init__(
        self,
        store: Store,
        manager: HandlerManager,
        dispatcher: Dispatcher,
        audit: AuditLog,
        *,
        address: str,
        database: str,
    ) -> None:
        self.store = store
        self.audit = audit
        self.manager = manager
        self.dispatcher = dispatcher
        self.address = address
        self.database = database
        self.started_at = time.time()

    @to_status
    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetStatusResponse:
        health = self.store.health
        if not health.healthy:  # from memory: answers while the database does not
            return admin_pb2.GetStatusResponse(
                version=netdist.__version__,
                address=self.address,
                database=self.database,
                started_at=self.started_at,
                workers_connected=len(self.dispatcher.links),
                heartbeat_interval_seconds=self.dispatcher.longest_heartbeat_interval(),
                store_state=health.state,
                store_problem=health.outage.reason if health.outage else "",
                store_unavailable_since=health.since,
            )
        handlers = await self.store.read(catalog.list_handlers)
        counts = await self._shown_counts(handlers)
        packages = await self.store.read(catalog.list_packages, all_versions=False)
        total: dict[str, int] = {}
        for per in counts.values():
            for status, n in per.items():
                total[status] = total.get(status, 0) + n
        return admin_pb2.GetStatusResponse(
            version=netdist.__version__,
            address=self.address,
            database=self.database,
            started_at=self.started_at,
            packages=len(packages),
            handlers=len(handlers),
            handlers_running=sum(1 for h in handlers if h.state == HandlerState.RUNNING),
            workers_connected=len(self.dispatcher.links),
            heartbeat_interval_seconds=self.dispatcher.longest_heartbeat_interval(),
            jobs_available=total.get(JobStatus.AVAILABLE, 0),
            jobs_pending=_pending(total),
            jobs_processed=total.get(JobStatus.PROCESSED, 0),
            jobs_failed=_failed(total),
            handlers_finished_with_failures=sum(
                1 for h in handlers if h.state == HandlerState.FINISHED and _failed(counts.get(h.id, {}))
            ),
            store_state="ok",
        )

    @to_status
    async def AddJobScript(
        self, request: admin_pb2.AddJobScriptRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AddJobScriptResponse:
        actor = self.audit.identify(context)
        filename = request.filename or "script.py"
        try:
            if len(request.content) > MAX_SCRIPT_BYTES:
                raise InvalidArgumentError(f"job script is over {MAX_SCRIPT_BYTES} bytes")
            if len(filename) > MAX_FILENAME_CHARS:
                raise InvalidArgumentError(
                    f"'filename': {len(filename)} characters is over the limit of {MAX_FILENAME_CHARS}"
                )
            if (control := control_character(filename)) is not None:
                raise InvalidArgumentError(f"'filename': holds the control character {control}")
            record, outcome = await self.manager.add_job_script(
                filename,
                request.content,
                uploaded_by=actor.name,
                pinned_lock=request.lock if request.HasField("lock") else None,
                refresh=request.refresh,
                deadline=answer_by(context),
            )
        except NetDistError as exc:
            self.audit.record(
                context,
                method=f"{_SERVICE}/AddJobScript",
                target=filename[:200],
                outcome=exc.code.name,
                detail=exc.message,
            )
            raise
        self.audit.record(
            context,
            method=f"{_SERVICE}/AddJobScript",
            target=f"handler {record.id}",
            detail=f"{outcome} from {filename[:200]} (job {record.job_name!r})",
        )
        return admin_pb2.AddJobScriptResponse(handler=await self._info(record), outcome=outcome)

    @to_status
    async def ListHandlers(
        self, request: admin_pb2.ListHandlersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListHandlersResponse:
        records = await self.store.read(catalog.list_handlers)
        counts = await self._shown_counts(records)
        current = await self._current_versions()
        running = {} if request.without_running else self.dispatcher.table.leases_by_handler(MAX_RUNNING_LISTED)
        return admin_pb2.ListHandlersResponse(
            handlers=[self._info_with(r, counts.get(r.id, {}), current, running.get(r.id, [])) for r in records]
        )

    @to_status
    async def GetHandler(
        self, request: admin_pb2.GetHandlerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetHandlerResponse:
        record = await self.store.read(catalog.resolve_handler, request.ref)
        info = await self._info(record)
        info.handler_state_bytes = len(record.handler_state_json.encode())
        if info.handler_state_bytes <= MAX_SHOWN_STATE:
            info.handler_state_json = record.handler_state_json
        return admin_pb2.GetHandlerResponse(handler=info)

    @to_status
    @audited(_SERVICE, target=lambda r: f"handler {r.ref}", detail=lambda r: _ACTIONS.get(r.action, "?"))
    async def ControlHandler(
        self, request: admin_pb2.ControlHandlerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ControlHandlerResponse:
        action = _ACTIONS.get(request.action)
        if action is None:
            raise InvalidArgumentError(f"'action': unknown handler action {request.action}")
        record = await self.manager.control(request.ref, action, wait=True, deadline=answer_by(context))
        return admin_pb2.ControlHandlerResponse(handler=await self._info(record))

    @to_status
    async def GetHandlerLog(
        self, request: admin_pb2.GetHandlerLogRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.LogLine]:
        record = await self.store.read(catalog.resolve_handler, request.ref)
        if request.jobs:
            async for line in self.handler_log_with_jobs(record.id, tail=max(0, request.tail), follow=request.follow):
                yield line
            return
        rows = await self.store.read(catalog.read_log, record.id, tail=max(0, request.tail))
        last = 0
        while True:
            for row in rows:
                last = row.id
                yield admin_pb2.LogLine(at=row.at, level=row.level, source=row.source, message=row.message)
            if not request.follow:
                return
            await asyncio.sleep(0.3)
            rows = await self.store.read(catalog.read_log, record.id, after_id=last)
            if not rows:
                await self.still_there(record.id)

    @to_status
    async def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAuditResponse:
        limit = request.limit if 0 < request.limit <= MAX_AUDIT else MAX_AUDIT
        rows = await self.store.read(audit_store.newest, since=request.since, limit=limit)
        return admin_pb2.ListAuditResponse(
            entries=[
                admin_pb2.AuditEntry(
                    at=r.at,
                    token_name=r.token_name,
                    role=r.role,
                    peer=r.peer,
                    method=r.method,
                    target=r.target,
                    outcome=r.outcome,
                    detail=r.detail,
                )
                for r in rows
            ]
        )

    async def _info(self, record: catalog.HandlerRecord) -> admin_pb2.HandlerInfo:
        counts = await self._shown_counts([record])
        return self._info_with(record, counts[record.id], await self._current_versions())

    async def _shown_counts(self, records: Sequence[catalog.HandlerRecord]) -> dict[str, dict[str, int]]:
        """Each handler's jobs per status as shown: processed and failed with those retention deleted.
        A running or paused handler's come from the lease table, in memory; only the others' are
        counted in the store (a GROUP BY over their jobs alone)."""
        queues = self.dispatcher.table.handlers
        shown = {r.id: queues[r.id].shown() for r in records if r.id in queues}
        rest = [r for r in records if r.id not in shown]
        stored = await self.store.read(job_store.counts, [r.id for r in rest]) if rest else {}
        for r in rest:
            shown[r.id] = shown_counts(stored.get(r.id, {}), (r.pruned_processed, r.pruned_failed))
        return shown

    async def _current_versions(self) -> dict[str, str]:
        """Each package's current version: what a handler that is not running would start on."""
        return {p.name: p.version for p in await self.store.read(catalog.list_packages, all_versions=False)}

    def _info_with(
        self,
        r: catalog.HandlerRecord,
        counts: dict[str, int],
        current: Mapping[str, str],
        running: list[Lease] | None = None,
    ) -> admin_pb2.HandlerInfo:
        """``running``: the handler's leases as the table holds them, if already at hand (at most
        MAX_RUNNING_LISTED, by job id)."""
        if running is None:
            running = self.dispatcher.table.leases_of(handler_id=r.id)[:MAX_RUNNING_LISTED]
        names = self._worker_names(lease.worker_id for lease in running)
        return admin_pb2.HandlerInfo(
            running=[running_job(lease, names) for lease in running],
            id=r.id,
            package=r.package,
            handler=r.handler,
            job_name=r.job_name,
            state=r.state,
            state_label=state_label(r.state, processed=counts.get(JobStatus.PROCESSED, 0), failed=_failed(counts)),
            message=r.message,
            jobs_available=counts.get(JobStatus.AVAILABLE, 0),
            jobs_pending=_pending(counts),
            jobs_processed=counts.get(JobStatus.PROCESSED, 0),
            jobs_failed=_failed(counts),
            jobs_total=r.total or 0,
            has_total=r.total is not None,
            package_version=self._package_version(r, current),
            script_sha256=r.script_sha256,
            settings_json=r.settings_json,
            custom_settings_json=r.custom_json,
            created_at=r.created_at,
            script_uploaded_by=r.script_uploaded_by,
            unservable_platforms=unservable(r.deps_lock_json),
            started_at=r.started_at or 0.0,
            finished_at=r.finished_at or 0.0,
            next_start_at=self.manager.next_start.get(r.id, 0.0),
            result_summary=r.summary,
            waiting=self._waiting_reason(r, counts),
        )

    def _waiting_reason(self, r: catalog.HandlerRecord, counts: dict[str, int]) -> str:
        """Why a running handler's available jobs go to no worker (server/waiting.py); "" otherwise."""
        if r.state != HandlerState.RUNNING or not counts.get(JobStatus.AVAILABLE, 0):
            return ""
        return waiting_reason(self.dispatcher.table, r.id, now=self.dispatcher.clock.time())

    def _worker_names(self, worker_ids: Iterable[str]) -> dict[str, str]:
        """The names of these workers (not of every one connected: there may be thousands)."""
        workers = self.dispatcher.table.workers
        return {i: w.name for i in set(worker_ids) if (w := workers.get(i)) is not None}

    def _package_version(self, r: catalog.HandlerRecord, current: Mapping[str, str]) -> str:
        """The version its host runs; when none runs, the one it would start on."""
        runtime = self.manager.runtimes.get(r.id)
        return runtime.package.version if runtime else current.get(r.package, "")


def _pending(counts: dict[str, int]) -> int:
    return sum(counts.get(s, 0) for s in (JobStatus.LEASED, JobStatus.SUCCEEDED, JobStatus.ERRORED))


def _failed(counts: dict[str, int]) -> int:
    return counts.get(JobStatus.FAILED, 0)
