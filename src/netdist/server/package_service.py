"""PackageService: wheels in (validated, content-addressed), blobs out by hash."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator

import grpc

from netdist.api.v1 import packages_pb2, packages_pb2_grpc
from netdist.errors import InvalidArgumentError, ResourceExhaustedError
from netdist.server.audit import AuditLog, audited
from netdist.server.blobs import BlobStore
from netdist.server.manager import HandlerManager
from netdist.server.registry import MAX_WHEEL_BYTES, inspect_wheel
from netdist.server.status import streaming, unary
from netdist.server.store import catalog
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.packages")
CHUNK = 1024 * 1024
MAX_WHEELS = 64


class PackageService(packages_pb2_grpc.PackageServiceServicer):
    def __init__(self, store: Store, blobs: BlobStore, manager: HandlerManager, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit
        self.blobs = blobs
        self.manager = manager

    @unary
    async def Upload(
        self, request_iterator: AsyncIterator[packages_pb2.UploadPackageRequest], context: grpc.aio.ServicerContext
    ) -> packages_pb2.UploadPackageResponse:
        received = await _receive(request_iterator)
        wheels = []
        for filename, data in received:
            sha = hashlib.sha256(data).hexdigest()
            wheels.append(await asyncio.to_thread(inspect_wheel, filename, data, sha))
        main, deps = wheels[0], wheels[1:]
        if not main.handlers:
            raise InvalidArgumentError(
                f"{main.filename}: declares no handlers (entry-point group 'netdist.handlers'); "
                "a package's first wheel must hold its handlers, dependencies follow it")
        for (_, data), info in zip(received, wheels, strict=True):
            await asyncio.to_thread(self.blobs.put, data)
            await asyncio.to_thread(self.blobs.unpacked, info.sha256)
        uploader = self.audit.identify(context).name
        before = await self.store.read(catalog.current_package, main.distribution)
        replaces = ""
        if before is not None and before.uploaded_by != uploader:
            replaces = f"; replaces {before.version}, uploaded by {before.uploaded_by or 'an unnamed client'}"
            log.warning("package %s %s uploaded by %s replaces %s uploaded by %s", main.distribution, main.version,
                        uploader or "an unnamed client", before.version, before.uploaded_by or "an unnamed client")
        record, created = await self.store.write(
            catalog.add_package, name=main.distribution, version=main.version, wheel=main.to_json_dict(),
            dependencies=[d.to_json_dict() for d in deps], handler_entries=main.handlers,
            uploaded_by=uploader)
        moved = await self.manager.package_uploaded(record)
        self.audit.record(context, method="PackageService/Upload", target=f"package {record.name} {record.version}",
                          detail=("uploaded" if created else "made current again") + replaces
                          + (f"; restarted handlers {', '.join(moved)}" if moved else ""))
        return packages_pb2.UploadPackageResponse(package=package_info(record), created=created,
                                                  restarted_handlers=moved)

    @unary
    async def List(self, request: packages_pb2.ListPackagesRequest, context: grpc.aio.ServicerContext
                   ) -> packages_pb2.ListPackagesResponse:
        records = await self.store.read(catalog.list_packages, all_versions=request.all_versions)
        return packages_pb2.ListPackagesResponse(packages=[package_info(r) for r in records])

    @unary
    @audited("PackageService", target=lambda r: f"package {r.name}" + (f" {r.version}" if r.version else ""),
             detail=lambda r: "remove")
    async def Remove(self, request: packages_pb2.RemovePackageRequest, context: grpc.aio.ServicerContext
                     ) -> packages_pb2.RemovePackageResponse:
        if not request.name:
            raise InvalidArgumentError("'name': give the package name to remove")
        removed = await self.store.write(catalog.remove_package, request.name, request.version or None)
        return packages_pb2.RemovePackageResponse(removed=removed)

    @streaming
    async def Fetch(self, request: packages_pb2.FetchRequest, context: grpc.aio.ServicerContext
                    ) -> AsyncIterator[packages_pb2.FetchResponse]:
        path = self.blobs.open(request.sha256)
        size = path.stat().st_size
        with path.open("rb") as f:
            first = True
            while True:
                chunk = await asyncio.to_thread(f.read, CHUNK)
                if not chunk and not first:
                    return
                yield packages_pb2.FetchResponse(chunk=chunk, total_size=size if first else 0)
                first = False
                if not chunk:
                    return


async def _receive(requests: AsyncIterator[packages_pb2.UploadPackageRequest]) -> list[tuple[str, bytes]]:
    wheels: list[tuple[str, bytearray]] = []
    async for req in requests:
        if req.HasField("header"):
            if len(wheels) >= MAX_WHEELS:
                raise ResourceExhaustedError(f"more than {MAX_WHEELS} wheels in one upload")
            if not req.header.filename:
                raise InvalidArgumentError("wheel header without a filename")
            wheels.append((req.header.filename, bytearray()))
        elif req.HasField("chunk"):
            if not wheels:
                raise InvalidArgumentError("upload sent bytes before a wheel header")
            buf = wheels[-1][1]
            buf.extend(req.chunk)
            if len(buf) > MAX_WHEEL_BYTES:
                raise ResourceExhaustedError(f"{wheels[-1][0]}: over the {MAX_WHEEL_BYTES} byte limit")
    if not wheels:
        raise InvalidArgumentError("upload held no wheel")
    return [(name, bytes(data)) for name, data in wheels]


def _wheel(d: dict[str, object]) -> packages_pb2.WheelInfo:
    return packages_pb2.WheelInfo(**{k: d[k] for k in ("filename", "sha256", "size", "distribution", "version")})  # type: ignore[arg-type]


def package_info(r: catalog.PackageRecord) -> packages_pb2.PackageInfo:
    return packages_pb2.PackageInfo(
        name=r.name, version=r.version, handlers=sorted(json.loads(r.handlers_json)), wheel=_wheel(r.wheel),
        dependencies=[_wheel(d) for d in r.dependencies], current=r.current, uploaded_at=r.uploaded_at,
        uploaded_by=r.uploaded_by,
    )


