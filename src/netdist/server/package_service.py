"""PackageService: wheels in (streamed to disk, validated, content-addressed), blobs out by hash."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import grpc

from netdist.api.v1 import packages_pb2, packages_pb2_grpc
from netdist.errors import InvalidArgumentError, NetDistError
from netdist.server.audit import AuditLog, audited
from netdist.server.blobs import BlobStore
from netdist.server.fetch_frames import read_frame
from netdist.server.grpc_errors import to_status
from netdist.server.manager import HandlerManager
from netdist.server.store import catalog
from netdist.server.store.facade import Store
from netdist.server.upload import Upload, UploadLimits
from netdist.server.wheels import inspect_wheel

log = logging.getLogger("netdist.server.packages")
CHUNK = 1024 * 1024


class PackageService(packages_pb2_grpc.PackageServiceServicer):
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        manager: HandlerManager,
        audit: AuditLog,
        *,
        limits: UploadLimits | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.blobs = blobs
        self.manager = manager
        self.limits = limits or UploadLimits()

    @to_status
    async def Upload(
        self, request_iterator: AsyncIterator[packages_pb2.UploadPackageRequest], context: grpc.aio.ServicerContext
    ) -> packages_pb2.UploadPackageResponse:
        try:
            record, created, detail = await self._upload(request_iterator, context)
        except NetDistError as exc:
            self.audit.record(
                context,
                method="PackageService/Upload",
                target="package upload",
                outcome=exc.code.name,
                detail=exc.message,
            )
            raise
        moved = self.manager.reload_package(record)
        self.audit.record(
            context,
            method="PackageService/Upload",
            target=f"package {record.name} {record.version}",
            detail=detail + (f"; restarted handlers {', '.join(moved)}" if moved else ""),
        )
        return packages_pb2.UploadPackageResponse(
            package=package_info(record), created=created, restarted_handlers=moved
        )

    async def _upload(
        self, requests: AsyncIterator[packages_pb2.UploadPackageRequest], context: grpc.aio.ServicerContext
    ) -> tuple[catalog.PackageRecord, bool, str]:
        """Receive, check and store the wheels; the package record, whether it is new, and what happened."""
        async with Upload(self.blobs, self.limits) as upload:  # no temporary file outlives the call
            received = await upload.receive(requests)
            wheels = [
                await asyncio.to_thread(inspect_wheel, r.filename, r.blob.path, r.blob.sha256, limits=self.blobs.limits)
                for r in received
            ]
            main = wheels[0]
            if not main.handlers:
                raise InvalidArgumentError(
                    f"{main.filename}: declares no handlers (entry-point group 'netdist.handlers'); "
                    "a package's first wheel must hold its handlers, dependencies follow it"
                )
            for wheel, info in zip(received, wheels, strict=True):
                await asyncio.to_thread(upload.adopt, wheel)
                await asyncio.to_thread(self.blobs.unpacked, info.sha256)
        uploader = self.audit.identify(context).name
        before = await self.store.read(catalog.current_package, main.distribution)
        replaces = ""
        if before is not None and before.uploaded_by != uploader:
            replaces = f"; replaces {before.version}, uploaded by {before.uploaded_by or 'an unnamed client'}"
            log.warning(
                "package %s %s uploaded by %s replaces %s uploaded by %s",
                main.distribution,
                main.version,
                uploader or "an unnamed client",
                before.version,
                before.uploaded_by or "an unnamed client",
            )
        record, created = await self.store.write(
            catalog.add_package,
            name=main.distribution,
            version=main.version,
            wheel=main.to_json_dict(),
            dependencies=[d.to_json_dict() for d in wheels[1:]],
            handler_entries=main.handlers,
            uploaded_by=uploader,
        )
        return record, created, ("uploaded" if created else "made current again") + replaces

    @to_status
    async def List(
        self, request: packages_pb2.ListPackagesRequest, context: grpc.aio.ServicerContext
    ) -> packages_pb2.ListPackagesResponse:
        records = await self.store.read(catalog.list_packages, all_versions=request.all_versions)
        return packages_pb2.ListPackagesResponse(packages=[package_info(r) for r in records])

    @to_status
    @audited(
        "PackageService",
        target=lambda r: f"package {r.name}" + (f" {r.version}" if r.version else ""),
        detail=lambda r: "remove --force" if r.force else "remove",
    )
    async def Remove(
        self, request: packages_pb2.RemovePackageRequest, context: grpc.aio.ServicerContext
    ) -> packages_pb2.RemovePackageResponse:
        if not request.name:
            raise InvalidArgumentError("'name': give the package name to remove")
        running = frozenset(
            hid
            for hid, runtime in self.manager.runtimes.items()
            if runtime.package.name == request.name and runtime.package.version == request.version
        )
        removed = await self.store.write(
            catalog.remove_package, request.name, request.version or None, force=request.force, running=running
        )
        return packages_pb2.RemovePackageResponse(removed=removed)

    @to_status
    async def Fetch(
        self, request: packages_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[packages_pb2.FetchResponse]:
        path = self.blobs.open(request.sha256)
        size = path.stat().st_size
        buffer = bytearray(CHUNK)
        with path.open("rb", buffering=0) as f:
            first = True
            while True:
                framed = await asyncio.to_thread(read_frame, f, buffer, size if first else 0)
                if not framed and not first:
                    return
                yield framed  # type: ignore[misc]  # pre-encoded: fetch_frames.py
                first = False
                if not framed:
                    return


def _wheel(d: dict[str, object]) -> packages_pb2.WheelInfo:
    return packages_pb2.WheelInfo(**{k: d[k] for k in ("filename", "sha256", "size", "distribution", "version")})  # type: ignore[arg-type]


def package_info(r: catalog.PackageRecord) -> packages_pb2.PackageInfo:
    return packages_pb2.PackageInfo(
        name=r.name,
        version=r.version,
        handlers=sorted(json.loads(r.handlers_json)),
        wheel=_wheel(r.wheel),
        dependencies=[_wheel(d) for d in r.dependencies],
        current=r.current,
        uploaded_at=r.uploaded_at,
        uploaded_by=r.uploaded_by,
    )
