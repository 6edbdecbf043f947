"""The worker's content-addressed artifact cache.

Layout under the cache dir::

    blobs/<sha256>        every fetched blob, verified, written via temp file + os.replace
    scripts/<sha256>.py   job scripts (importable by path)
    envs/<sha256>/        each wheel unpacked once, via a temp dir + os.replace

Blobs come from the server's ``PackageService.Fetch`` (a :class:`BlobSource`);
concurrent requests for one hash share one fetch. Any failure (not found,
hash mismatch, unreachable, unsafe wheel) is an :class:`ArtifactError`, which
the session turns into a failed job: it never stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Protocol

import grpc

from netdist.api.v1 import packages_pb2, packages_pb2_grpc
from netdist.errors import NetDistError
from netdist.worker.job import Environment

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FETCH_ATTEMPTS = 3
FETCH_RETRY_SECONDS = 0.5


class ArtifactError(NetDistError):
    """A job's script or wheel could not be fetched, verified or unpacked."""


class BlobSource(Protocol):
    """Where blobs come from: the server, or a directory in tests."""

    def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; raise ArtifactError when it cannot be had."""
        ...


class PackageServiceSource:
    """Fetches blobs with ``PackageService.Fetch`` over a grpc.aio channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = packages_pb2_grpc.PackageServiceStub(channel)

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        expected: int | None = None
        received = 0
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                call = self._stub.Fetch(packages_pb2.FetchRequest(sha256=sha256))
                async for response in call:
                    if expected is None and response.total_size:
                        expected = response.total_size
                    received += len(response.chunk)
                    yield response.chunk
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if (
                    received == 0
                    and code == grpc.StatusCode.UNAVAILABLE
                    and attempt < FETCH_ATTEMPTS
                ):
                    await asyncio.sleep(FETCH_RETRY_SECONDS * attempt)
                    continue
                raise ArtifactError(
                    f"cannot fetch {_short(sha256)} from the server: {code.name}: {exc.details()}"
                ) from None
        if expected is not None and received != expected:
            raise ArtifactError(
                f"blob {_short(sha256)} arrived with {received} of {expected} bytes"
            )


class DirectorySource:
    """Blobs read from files named by their hash (for tests and offline use)."""

    def __init__(self, root: Path, *, chunk_size: int = 64 * 1024) -> None:
        self._root = root
        self._chunk_size = chunk_size

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        path = self._root / sha256
        if not path.is_file():
            raise ArtifactError(f"cannot fetch {_short(sha256)}: NOT_FOUND")
        with path.open("rb") as stream:
            while chunk := stream.read(self._chunk_size):
                yield chunk


def _short(sha256: str) -> str:
    return sha256[:12]


def check_sha256(sha256: str) -> None:
    """Refuse anything but 64 lower-case hex digits (it becomes a file name)."""
    if not _SHA256.match(sha256):
        raise ArtifactError(f"invalid sha256 {sha256[:80]!r}")


async def write_verified(chunks: AsyncIterator[bytes], sha256: str, dest: Path) -> Path:
    """Stream ``chunks`` into ``dest`` if their sha256 matches; atomic via a temp file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as stream:
            async for chunk in chunks:
                digest.update(chunk)
                stream.write(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise ArtifactError(
                f"blob {_short(sha256)} failed verification: its sha256 is {_short(actual)}"
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def _member_target(name: str) -> PurePosixPath | None:
    """Where a wheel member goes in the unpacked tree; None to skip it."""
    if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise ArtifactError(f"wheel member {name!r} has an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise ArtifactError(f"wheel member {name!r} leaves the wheel's directory")
    parts = path.parts
    if len(parts) >= 2 and parts[0].endswith(".data"):
        if parts[1] in ("purelib", "platlib") and len(parts) > 2:
            return PurePosixPath(*parts[2:])
        return None  # scripts, headers, data: not for sys.path
    return path


def unpack_wheel(wheel: Path, dest: Path) -> Path:
    """Unpack ``wheel`` into ``dest`` (atomic: a temp dir then os.replace). Idempotent."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
    try:
        try:
            archive = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArtifactError(
                f"wheel {wheel.name} is not a zip file: {exc}"
            ) from None
        with archive:
            for info in archive.infolist():
                target = _member_target(info.filename)
                if target is None or info.is_dir():
                    continue
                out = tmp.joinpath(*target.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another worker process won the race: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class ArtifactCache:
    """Job scripts and unpacked wheels on disk, fetched on first use."""

    def __init__(self, root: Path, source: BlobSource) -> None:
        self.root = root
        self._source = source
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._environments: dict[tuple[str, tuple[str, ...]], Environment] = {}

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def script_path(self, sha256: str) -> Path:
        return self.root / "scripts" / f"{sha256}.py"

    def env_path(self, sha256: str) -> Path:
        return self.root / "envs" / sha256

    def cached_environment(
        self, script_sha256: str, wheel_sha256s: Iterable[str]
    ) -> Environment | None:
        """The environment if it is ready already (no await, for the hot path)."""
        return self._environments.get((script_sha256, tuple(wheel_sha256s)))

    async def environment(
        self, script_sha256: str, wheel_sha256s: Iterable[str]
    ) -> Environment:
        """Fetch and unpack whatever is missing; the environment to run a job in."""
        wheels = tuple(wheel_sha256s)
        key = (script_sha256, wheels)
        ready = self._environments.get(key)
        if ready is not None:
            return ready
        script, *dirs = await asyncio.gather(
            self.script(script_sha256), *(self.unpacked_wheel(sha) for sha in wheels)
        )
        environment = Environment(
            script_sha256=script_sha256,
            script_path=script,
            wheel_sha256s=wheels,
            wheel_dirs=tuple(dirs),
        )
        self._environments[key] = environment
        return environment

    async def fetch(self, sha256: str) -> Path:
        """The verified blob on disk."""
        check_sha256(sha256)
        path = self.blob_path(sha256)
        if path.is_file():
            return path
        return await self._once(f"blob:{sha256}", lambda: self._download(sha256, path))

    async def script(self, sha256: str) -> Path:
        check_sha256(sha256)
        path = self.script_path(sha256)
        if path.is_file():
            return path
        return await self._once(
            f"script:{sha256}", lambda: self._download(sha256, path)
        )

    async def unpacked_wheel(self, sha256: str) -> Path:
        check_sha256(sha256)
        dest = self.env_path(sha256)
        if dest.is_dir():
            return dest

        async def unpack() -> Path:
            blob = await self.fetch(sha256)
            return await asyncio.to_thread(unpack_wheel, blob, dest)

        return await self._once(f"env:{sha256}", unpack)

    async def _download(self, sha256: str, dest: Path) -> Path:
        log.info("fetching %s", _short(sha256))
        try:
            return await write_verified(self._source.chunks(sha256), sha256, dest)
        except ArtifactError:
            raise
        except OSError as exc:
            raise ArtifactError(
                f"cannot store {_short(sha256)} in the cache: {exc}"
            ) from None

    async def _once(self, key: str, make: Callable[[], Awaitable[Path]]) -> Path:
        """Run ``make`` once per key at a time; every concurrent caller shares it."""
        task = self._inflight.get(key)
        if task is None:

            async def run() -> Path:
                try:
                    return await make()
                finally:
                    self._inflight.pop(key, None)

            task = asyncio.get_running_loop().create_task(run(), name=f"netdist-{key}")
            task.add_done_callback(_consume_exception)
            self._inflight[key] = task
        return await asyncio.shield(task)


def _consume_exception(task: asyncio.Task[Path]) -> None:
    """Every waiter may have gone: keep asyncio from warning about the exception."""
    if not task.cancelled():
        task.exception()
