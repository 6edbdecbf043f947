"""An upload of wheels, streamed to temporary files under the data dir and checked as it arrives.

Nothing is buffered whole: each chunk is written and hashed as it comes, so
the server's memory stays flat however large the upload. Each check runs as
early as it can:

- a header: the wheel file name has the right form, a size is declared, the
  declared sizes together stay within ``max_upload_bytes`` and the blob store
  has room for them (:meth:`BlobStore.reserve`);
- the first bytes: a zip local-file signature (``PK\\x03\\x04``);
- every chunk: the wheel stays within the size its header declared; the
  moment it passes, the upload is cut off (RESOURCE_EXHAUSTED);
- a wheel's end: exactly the declared bytes arrived.

The contents (zip directory, limits, metadata) are judged afterwards by
:mod:`netdist.server.wheels`. Whatever ends the upload, a refusal, an error or the client going
away (the call is cancelled), ``async with`` removes every temporary file
not yet moved into the store and releases the reserved room.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from types import TracebackType

from netdist.api.v1 import packages_pb2
from netdist.errors import InvalidArgumentError, ResourceExhaustedError, WheelError
from netdist.server.blobs import BlobStore, IncomingBlob
from netdist.server.wheels import check_filename

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024
MAX_WHEELS = 64
ZIP_SIGNATURE = b"PK\x03\x04"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UploadLimits:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    """All the wheels of one upload together."""
    max_wheels: int = MAX_WHEELS


@dataclasses.dataclass(slots=True, kw_only=True)
class ReceivedWheel:
    filename: str
    declared: int
    blob: IncomingBlob
    head: bytes = b""
    """The first bytes, until the zip signature is checked."""


class Upload:
    """One upload's wheels, on their way in; use as ``async with``."""

    def __init__(self, blobs: BlobStore, limits: UploadLimits) -> None:
        self.blobs = blobs
        self.limits = limits
        self.wheels: list[ReceivedWheel] = []
        self._declared = 0
        self._reserved = 0

    async def __aenter__(self) -> Upload:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for wheel in self.wheels:
            wheel.blob.discard()  # a no-op for those moved into the store
        self.blobs.release(self._reserved)
        self._reserved = 0

    async def receive(self, requests: AsyncIterator[packages_pb2.UploadPackageRequest]) -> list[ReceivedWheel]:
        """Read the whole stream to disk, checking as it comes; the wheels, each finished and hashed."""
        current: ReceivedWheel | None = None
        async for request in requests:
            kind = request.WhichOneof("kind")
            if kind == "header":
                if current is not None:
                    await self._finish(current)
                current = self._start(request.header)
            elif kind == "chunk":
                if current is None:
                    raise InvalidArgumentError("upload sent bytes before a wheel header")
                self._check_chunk(current, request.chunk)
                await asyncio.to_thread(current.blob.write, request.chunk)
            else:
                raise InvalidArgumentError("an upload message holds neither a header nor a chunk")
        if current is None:
            raise InvalidArgumentError("upload held no wheel")
        await self._finish(current)
        return self.wheels

    def adopt(self, wheel: ReceivedWheel) -> str:
        """Move a received wheel into the store by its hash (blocking: call in a thread)."""
        return self.blobs.adopt(wheel.blob)

    def _start(self, header: packages_pb2.WheelHeader) -> ReceivedWheel:
        if len(self.wheels) >= self.limits.max_wheels:
            raise ResourceExhaustedError(f"more than {self.limits.max_wheels} wheels in one upload")
        filename = header.filename
        if not filename:
            raise InvalidArgumentError("wheel header without a filename")
        check_filename(filename)
        if header.size <= 0:
            raise InvalidArgumentError(f"{filename}: its header declares no size; send the wheel's size in bytes")
        total = self._declared + header.size
        if total > self.limits.max_upload_bytes:
            raise ResourceExhaustedError(
                f"{filename}: {header.size} bytes would bring this upload to {total} bytes, over the limit of "
                f"{self.limits.max_upload_bytes} (--max-upload-bytes)"
            )
        self.blobs.reserve(header.size)
        self._reserved += header.size
        self._declared = total
        wheel = ReceivedWheel(filename=filename, declared=header.size, blob=self.blobs.incoming())
        self.wheels.append(wheel)
        return wheel

    def _check_chunk(self, wheel: ReceivedWheel, chunk: bytes) -> None:
        if wheel.blob.size + len(chunk) > wheel.declared:
            raise ResourceExhaustedError(
                f"{wheel.filename}: more than the {wheel.declared} bytes its header declared; upload cut off"
            )
        if len(wheel.head) < len(ZIP_SIGNATURE):
            wheel.head += chunk[: len(ZIP_SIGNATURE) - len(wheel.head)]
            if len(wheel.head) == len(ZIP_SIGNATURE) and wheel.head != ZIP_SIGNATURE:
                raise _not_a_zip(wheel.filename)

    async def _finish(self, wheel: ReceivedWheel) -> None:
        if wheel.blob.size != wheel.declared:
            raise InvalidArgumentError(
                f"{wheel.filename}: {wheel.blob.size} bytes arrived, its header declared {wheel.declared}"
            )
        if wheel.head != ZIP_SIGNATURE:
            raise _not_a_zip(wheel.filename)
        await asyncio.to_thread(wheel.blob.finish)


def _not_a_zip(filename: str) -> WheelError:
    return WheelError(f"{filename}: not a valid zip archive (it does not start with a zip local-file header)")
