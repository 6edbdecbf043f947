"""AdminService's worker calls: list, remove, disable, enable."""

from __future__ import annotations

import json
import time

import grpc

from netdist import fields
from netdist.api.v1 import admin_pb2, admin_pb2_grpc
from netdist.server.audit import AuditLog, audited
from netdist.server.deps_lock import platform_key, unservable_handlers
from netdist.server.dispatcher import Dispatcher
from netdist.server.event_hub import WorkerChange
from netdist.server.grpc_errors import to_status
from netdist.server.job_views import MAX_RUNNING_LISTED, running_job
from netdist.server.store import catalog, credentials
from netdist.server.store.facade import Store

_SERVICE = "AdminService"


class WorkerAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Mixed into AdminService, which sets these."""

    store: Store
    dispatcher: Dispatcher
    audit: AuditLog

    @to_status
    async def ListWorkers(
        self, request: admin_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListWorkersResponse:
        records = await self.store.read(catalog.list_workers)
        unservable_on = await self.store.read(unservable_handlers)
        names = {r.id: r.name[: fields.MAX_NAME] for r in records}
        out = []
        for r in records:
            connected = r.id in self.dispatcher.links
            leases = self.dispatcher.table.leases_of(worker_id=r.id)
            # The results counted since the last flush to the store (once a second) count too: read
            # after the store, a count is in one of them, never both.
            state = self.dispatcher.table.workers.get(r.id)
            done, failed = (state.done, state.failed) if state is not None else (0, 0)
            out.append(
                admin_pb2.WorkerInfo(
                    id=r.id,
                    name=names[r.id],
                    labels=_stored_labels(r.labels_json),
                    slots=r.slots,
                    connected=connected,
                    connected_since=r.connected_since or 0.0,
                    last_seen=time.time() if connected else (r.last_seen or 0.0),
                    jobs_running=len(leases),
                    jobs_done=r.jobs_done + done,
                    jobs_failed=r.jobs_failed + failed,
                    hostname=r.hostname[: fields.MAX_HOSTNAME],
                    version=r.version[: fields.MAX_VERSION],
                    running=[running_job(lease, names) for lease in leases[:MAX_RUNNING_LISTED]],
                    disabled=r.disabled,
                    platform=platform_key(r.platform_json),
                    unservable_handlers=unservable_on.get(platform_key(r.platform_json), []),
                )
            )
        return admin_pb2.ListWorkersResponse(workers=out)

    @to_status
    @audited(_SERVICE, target=lambda r: f"worker {r.ref}", detail=lambda r: "remove")
    async def RemoveWorker(
        self, request: admin_pb2.RemoveWorkerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RemoveWorkerResponse:
        record = await self.store.read(catalog.resolve_worker, request.ref)
        await self.store.write(credentials.forget_credential, record.id)  # let go, not banned: the id is free
        returned = await self.dispatcher.remove_worker(record.id)
        _changed(self.dispatcher, record, "removed")
        return admin_pb2.RemoveWorkerResponse(leases_returned=returned)

    @to_status
    @audited(_SERVICE, target=lambda r: f"worker {r.ref}", detail=lambda r: "disable")
    async def DisableWorker(
        self, request: admin_pb2.DisableWorkerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DisableWorkerResponse:
        record = await self.store.read(catalog.resolve_worker, request.ref)
        await self.store.write(catalog.set_worker_disabled, record.id, True)
        returned = await self.dispatcher.remove_worker(
            record.id, "this worker was disabled by the operator: it may not connect until enabled"
        )
        _changed(self.dispatcher, record, "disabled")
        return admin_pb2.DisableWorkerResponse(leases_returned=returned)

    @to_status
    @audited(_SERVICE, target=lambda r: f"worker {r.ref}", detail=lambda r: "enable")
    async def EnableWorker(
        self, request: admin_pb2.EnableWorkerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.EnableWorkerResponse:
        record = await self.store.read(catalog.resolve_worker, request.ref)
        await self.store.write(catalog.set_worker_disabled, record.id, False)
        _changed(self.dispatcher, record, "enabled")
        return admin_pb2.EnableWorkerResponse()


def _changed(dispatcher: Dispatcher, record: catalog.WorkerRecord, change: str) -> None:
    """Tell the watchers (:mod:`netdist.server.event_hub`)."""
    dispatcher.hub.worker_changed(
        WorkerChange(
            worker_id=record.id,
            change=change,
            name=record.name[: fields.MAX_NAME],
            slots=record.slots,
            labels=_stored_labels(record.labels_json),
            hostname=record.hostname[: fields.MAX_HOSTNAME],
            version=record.version[: fields.MAX_VERSION],
        )
    )


def _stored_labels(labels_json: str) -> dict[str, str]:
    """A worker's labels as stored, within the Hello limits: a row from before them cannot swell the reply."""
    labels = json.loads(labels_json)
    return {
        str(k)[: fields.MAX_LABEL_KEY]: str(v)[: fields.MAX_LABEL_VALUE]
        for k, v in sorted(labels.items())[: fields.MAX_LABELS]
    }
