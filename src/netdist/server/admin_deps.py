"""AdminService's dependency call: a handler instance's lock, per platform."""

from __future__ import annotations

import grpc

from netdist.api.v1 import admin_pb2, admin_pb2_grpc
from netdist.platforms import this_platform
from netdist.server.deps_lock import Lock
from netdist.server.grpc_errors import to_status
from netdist.server.store import catalog
from netdist.server.store.facade import Store


class DepsAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Mixed into AdminService, which sets these."""

    store: Store

    @to_status
    async def GetJobScriptDeps(
        self, request: admin_pb2.GetJobScriptDepsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetJobScriptDepsResponse:
        record = await self.store.read(catalog.resolve_handler, request.ref)
        lock = Lock.from_json(record.deps_lock_json)
        native = this_platform().key
        return admin_pb2.GetJobScriptDepsResponse(
            handler_id=record.id,
            job_name=record.job_name,
            dependencies=lock.needs.dependencies,
            requires_python=lock.needs.requires_python,
            pinned=bool(lock.pinned),
            pinned_lock=lock.pinned,
            platforms=[
                admin_pb2.PlatformLockInfo(
                    key=key,
                    error=p.error,
                    resolved_at=p.resolved_at,
                    server=key == native,
                    wheels=[
                        admin_pb2.LockedWheelInfo(
                            name=w.name, version=w.version, filename=w.filename, sha256=w.sha256, size=w.size
                        )
                        for w in p.wheels
                    ],
                )
                for key, p in sorted(lock.platforms.items(), key=lambda kv: (kv[0] != native, kv[0]))
            ],
        )
