"""PackageService: wheels in (streamed to disk, validated, content-addressed), blobs out by hash.

An upload's Requires-Dist must be met before a handler instance moves to it
(:mod:`netdist.server.package_requirements`): by its own wheels, by dependency
wheels stored with an earlier version of the package (carried over), or else
by the index, and only when every handler instance of the package has a
dependency lock that takes it from there (an instance without one gets the
package's wheels alone). Otherwise FAILED_PRECONDITION, naming the requirement.
A package no instance runs on yet is taken as before: a job script's
``dependencies`` may meet its requirements from the index when it is added.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from netdist.api.v1 import packages_pb2, packages_pb2_grpc
from netdist.errors import FailedPreconditionError, InvalidArgumentError, NetDistError
from netdist.server.audit import AuditLog, audited
from netdist.server.blobs import BlobStore
from netdist.server.deps_lock import ScriptNeeds
from netdist.server.deps_resolver import PackageWheel
from netdist.server.fetch_frames import read_frame
from netdist.server.grpc_errors import to_status
from netdist.server.manager import HandlerManager
from netdist.server.package_requirements import Completion, Unmet, complete
from netdist.server.reply_deadline import answer_by
from netdist.server.states import HandlerState
from netdist.server.store import catalog
from netdist.server.store.facade import Store
from netdist.server.upload import Upload, UploadLimits
from netdist.server.wheels import WheelInfo, inspect_wheel, read_requires

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
            record, created, carried, detail = await self._upload(request_iterator, context)
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
        await self.manager.wait_moved(moved, answer_by(context))
        failed = [
            h
            for h in [await self.store.read(catalog.get_handler, hid) for hid in moved]
            if h.state == HandlerState.FAILED
        ]
        self.audit.record(
            context,
            method="PackageService/Upload",
            target=f"package {record.name} {record.version}",
            detail=detail + (f"; restarted handlers {', '.join(moved)}" if moved else ""),
        )
        return packages_pb2.UploadPackageResponse(
            package=package_info(record),
            created=created,
            restarted_handlers=moved,
            carried_over=[_wheel(d) for d in carried],
            failed_handlers=[
                packages_pb2.FailedHandler(id=h.id, job_name=h.job_name, message=h.message or "") for h in failed
            ],
        )

    async def _upload(
        self, requests: AsyncIterator[packages_pb2.UploadPackageRequest], context: grpc.aio.ServicerContext
    ) -> tuple[catalog.PackageRecord, bool, list[dict[str, Any]], str]:
        """Receive, check and store the wheels; the package record, whether it is new, the stored dependency
        wheels it carries over, and what happened. Nothing is stored (but content-addressed blobs) unless
        every check passed."""
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
            completion = await self._complete(wheels)
            locked = await self._refuse_for_instances_without_a_lock(main, completion.unmet) if completion.unmet else 0
            for wheel, info in zip(received, wheels, strict=True):
                await asyncio.to_thread(upload.adopt, wheel)
                await asyncio.to_thread(self.blobs.unpacked, info.sha256)
            if locked:
                await self._refuse_unless_the_index_meets(wheels, completion)
        carried = [dict(w) for w in completion.carried]
        for kept_wheel in carried:
            await asyncio.to_thread(self.blobs.unpacked, kept_wheel["sha256"])
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
            dependencies=[*(d.to_json_dict() for d in wheels[1:]), *carried],
            handler_entries=main.handlers,
            uploaded_by=uploader,
        )
        kept = f"; carried over {', '.join(w['filename'] for w in carried)}" if carried else ""
        return record, created, carried, ("uploaded" if created else "made current again") + kept + replaces

    async def _complete(self, wheels: list[WheelInfo]) -> Completion:
        """The upload's requirements met by its wheels, or by dependency wheels stored with earlier versions."""
        stored = await self.store.read(catalog.stored_dependencies, wheels[0].distribution)
        present = [w for w in stored if self.blobs.path(str(w["sha256"])).exists()]

        def requires_of(wheel: Mapping[str, Any]) -> tuple[str, ...]:
            return read_requires(str(wheel["filename"]), self.blobs.open(str(wheel["sha256"])))

        return await asyncio.to_thread(complete, wheels, present, requires_of)

    async def _refuse_for_instances_without_a_lock(self, main: WheelInfo, unmet: Sequence[Unmet]) -> int:
        """A handler instance without a dependency lock gets the package's wheels alone: what they do not
        meet, its jobs would not find. Returns how many instances have a lock (0: none runs on the package
        yet, and the upload is taken as before: a job script with ``dependencies`` may meet it later)."""
        instances = await self.store.read(catalog.package_handlers, main.distribution)
        bare = [h for h in instances if not h.deps_lock_json]
        if not bare:
            return len(instances)
        named = ", ".join(f"{h.id} ({h.job_name!r})" for h in bare[:_NAMED])
        more = f" and {len(bare) - _NAMED} more" if len(bare) > _NAMED else ""
        raise FailedPreconditionError(
            f"{_unmet_text(main, unmet)}; handler instance{'s' if len(bare) != 1 else ''} {named}{more} "
            f"of {main.distribution} {'have' if len(bare) != 1 else 'has'} no dependency lock to take it from "
            f"the index. {_fix(main)}"
        )

    async def _refuse_unless_the_index_meets(self, wheels: list[WheelInfo], completion: Completion) -> None:
        """Every handler instance has a dependency lock, resolved from the index with the package's
        Requires-Dist (docs/job-scripts.md#dependencies): the index must meet what the wheels do not."""
        main = wheels[0]
        locker = self.manager.locker
        offered = [*wheels, *(WheelInfo(handlers={}, **w) for w in completion.carried)]
        try:
            await locker.resolver.resolve(
                needs=ScriptNeeds(),
                pins={},
                package=main.distribution,
                package_wheels=[PackageWheel(filename=w.filename, sha256=w.sha256) for w in offered],
                target=locker.native,
                native=True,
            )
        except NetDistError as exc:
            raise FailedPreconditionError(
                f"{_unmet_text(main, completion.unmet)}, and the server's index does not meet it either "
                f"({exc.message}). {_fix(main)}"
            ) from None

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


_NAMED = 10
"""Most handler instances a refusal names (the count is exact)."""


def _unmet_text(main: WheelInfo, unmet: Sequence[Unmet]) -> str:
    package = f"{main.distribution} {main.version}"
    return (
        f"{package} requires {', '.join(u.describe(package) for u in unmet)}, which no wheel of this upload "
        "satisfies, nor any dependency wheel stored with an earlier version"
    )


def _fix(main: WheelInfo) -> str:
    return (
        f"Upload the dependency wheel with the package: netdist-admin upload-package {main.filename} DEPENDENCY.whl "
        "(nothing was stored, no handler restarted)"
    )


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
