"""Where the worker's cache gets blobs, and how one lands on disk: verified as it streams in.

A blob's name is its sha256: :func:`check_sha256` refuses any other name (it
becomes a file name), and :func:`write_verified` puts the bytes under it only
if they hash to it (a temp file, then ``os.replace``). A source that cannot
give a blob raises :class:`~netdist.errors.ArtifactError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import grpc

from netdist.api.v1 import packages_pb2, packages_pb2_grpc
from netdist.errors import ArtifactError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FETCH_ATTEMPTS = 3
FETCH_RETRY_SECONDS = 0.5


class BlobSource(Protocol):
    """Where blobs come from: the server, or a directory in tests."""

    def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; raise ArtifactError when it cannot be had."""
        ...


class PackageServiceSource:
    """Fetches blobs with ``PackageService.Fetch`` over a grpc.aio channel."""

    def __init__(self, channel: grpc.aio.Channel, *, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._stub = packages_pb2_grpc.PackageServiceStub(channel)
        self._metadata = tuple(metadata)

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        expected: int | None = None
        received = 0
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                call = self._stub.Fetch(packages_pb2.FetchRequest(sha256=sha256), metadata=self._metadata)
                async for response in call:
                    if expected is None and response.total_size:
                        expected = response.total_size
                    received += len(response.chunk)
                    yield response.chunk
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if received == 0 and code == grpc.StatusCode.UNAVAILABLE and attempt < FETCH_ATTEMPTS:
                    await asyncio.sleep(FETCH_RETRY_SECONDS * attempt)
                    continue
                raise ArtifactError(
                    f"cannot fetch {short(sha256)} from the server: {code.name}: {exc.details()}"
                ) from None
        if expected is not None and received != expected:
            raise ArtifactError(f"blob {short(sha256)} arrived with {received} of {expected} bytes")


class DirectorySource:
    """Blobs read from files named by their hash (for tests and offline use)."""

    def __init__(self, root: Path, *, chunk_size: int = 64 * 1024) -> None:
        self._root = root
        self._chunk_size = chunk_size

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        path = self._root / sha256
        if not path.is_file():
            raise ArtifactError(f"cannot fetch {short(sha256)}: NOT_FOUND")
        with path.open("rb") as stream:
            while chunk := stream.read(self._chunk_size):
                yield chunk


def short(sha256: str) -> str:
    """A blob's name as messages show it."""
    return sha256[:12]


def check_sha256(sha256: str) -> None:
    """Refuse anything but 64 lower-case hex digits (it becomes a file name)."""
    if not _SHA256.match(sha256):
        raise ArtifactError(f"invalid sha256 {sha256[:80]!r}")


async def write_verified(chunks: AsyncIterator[bytes], sha256: str, dest: Path) -> Path:
    """Stream ``chunks`` into ``dest`` if their sha256 matches; atomic via a temp file."""
    digest = hashlib.sha256()
    with replacing(dest) as stream:
        async for chunk in chunks:
            digest.update(chunk)
            stream.write(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise ArtifactError(f"blob {short(sha256)} failed verification: its sha256 is {short(actual)}")
    return dest


@contextlib.contextmanager
def replacing(dest: Path) -> Iterator[BinaryIO]:
    """A temp file beside ``dest``, put in its place (``os.replace``) if the block ends without an error, else removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
