"""The worker's content-addressed artifact cache, verified before use.

Layout under the cache dir::

    blobs/<sha256>        every fetched blob, verified, written via temp file + os.replace
    scripts/<sha256>.py   job scripts (importable by path)
    envs/<sha256>/        each wheel unpacked once, via a temp dir + os.replace

Blobs come from the server's ``PackageService.Fetch`` (a :class:`BlobSource`);
concurrent requests for one hash share one fetch. Any failure (not found,
hash mismatch, unreachable, unsafe wheel) is an :class:`ArtifactError`, which
the session turns into a failed job: it never stops the worker.

What is verified when (nothing on disk is trusted because it is there):

- A fetched blob is hashed as it streams in; it lands under its name only if
  the sha256 matches.
- A job script, or a wheel about to be unpacked or checked against, is hashed
  in full the first time this process uses it. A mismatch deletes it, logs one
  warning and fetches it again.
- An unpacked wheel is verified in full the first time this process uses it:
  every file the wheel puts there must match that member's sha256 in the
  (verified) wheel, and no other file Python could import (``.py``, ``.pyc``,
  extension modules; ``__pycache__`` aside, which Python checks against the
  source itself) nor symlink may be there. Damage logs one warning and unpacks
  the wheel again (the damaged tree is moved aside, then removed).
- A wheel is unpacked (or hashed member by member) only if its zip directory
  declares no more than ``--max-unpacked-bytes`` (1 GiB), and the unpack
  counts what it writes, stopping past a member's declared size or the limit
  (:mod:`netdist.ziplimit`): a wheel that lies in its directory cannot fill
  the disk.
- After that, a stat signature (size, mtime, ctime and inode of every file)
  stands in for the hashes: :meth:`ArtifactCache.cached_environment`, the
  per-job hot path, compares it at most once per ``recheck_seconds`` (1 s) per
  environment, and when it changed the environment goes back through the full
  checks before the next job runs in it. So no job ever hashes anything; damage
  that leaves stat alone (a bit flipped on the disk) is found when the next
  worker process starts.
- An environment whose script or tree was repaired gets a new
  :attr:`~netdist.worker.job.Environment.generation`, so jobs go to fresh
  executor children, not to ones that may have loaded the damaged code.

Workers sharing a cache dir may repair the same entry at once: each puts a
complete, verified copy in place with ``os.replace``, so the last one wins and
all are right.
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
import time
import zipfile
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from importlib.machinery import all_suffixes
from pathlib import Path, PurePosixPath
from typing import Protocol

import grpc

from netdist.api.v1 import packages_pb2, packages_pb2_grpc
from netdist.errors import ArtifactError, UnpackLimitError, WheelError
from netdist.worker.job import Environment
from netdist.ziplimit import ZipLimits, check_directory, extract

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FETCH_ATTEMPTS = 3
FETCH_RETRY_SECONDS = 0.5
RECHECK_SECONDS = 1.0
"""How often the hot path compares an environment's stat signature, at most."""
_HASH_CHUNK = 1 << 20
_IMPORTABLE = tuple(all_suffixes())
WORKER_ZIP_LIMITS = ZipLimits(max_ratio=None)
"""A wheel's unpacked size is capped (the worker's disk); its ratio was judged by the server at upload."""

Signature = tuple[tuple[str, int, int, int, int, int], ...]
"""Per file: relative path, size, mtime_ns, ctime_ns, inode, mode; sorted."""


class BlobSource(Protocol):
    """Where blobs come from: the server, or a directory in tests."""

    def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; raise ArtifactError when it cannot be had."""
        ...


class PackageServiceSource:
    """Fetches blobs with ``PackageService.Fetch`` over a grpc.aio channel."""

    def __init__(
        self, channel: grpc.aio.Channel, *, metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._stub = packages_pb2_grpc.PackageServiceStub(channel)
        self._metadata = tuple(metadata)

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        expected: int | None = None
        received = 0
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                call = self._stub.Fetch(
                    packages_pb2.FetchRequest(sha256=sha256), metadata=self._metadata
                )
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


def unpack_wheel(
    wheel: Path, dest: Path, *, replace: bool = False, limits: ZipLimits = WORKER_ZIP_LIMITS
) -> Path:
    """Unpack ``wheel`` into ``dest`` (atomic: a temp dir then os.replace).

    Idempotent unless ``replace``: then a tree already at ``dest`` is moved
    aside and removed once the fresh one is in its place.
    """
    if dest.is_dir() and not replace:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
    try:
        with _open_wheel(wheel, limits) as archive:
            try:  # counted: stops past a member's declared size or the limit, whatever the directory says
                extract(archive, tmp, limits, name=f"wheel {_short(wheel.name)}", target=_member_target)
            except (UnpackLimitError, WheelError) as exc:
                raise ArtifactError(exc.message) from None
        _put_tree(tmp, dest, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _open_wheel(wheel: Path, limits: ZipLimits) -> zipfile.ZipFile:
    """The wheel's zip, its directory checked against ``limits`` before anything is inflated."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"wheel {wheel.name} is not a zip file: {exc}") from None
    try:
        check_directory(f"wheel {_short(wheel.name)}", archive.infolist(), wheel.stat().st_size, limits)
    except (UnpackLimitError, WheelError) as exc:
        archive.close()
        raise ArtifactError(exc.message) from None
    return archive


def _put_tree(tmp: Path, dest: Path, *, replace: bool) -> None:
    """Move the finished tree ``tmp`` to ``dest``; another process's copy there is as good."""
    aside: Path | None = None
    try:
        if replace and dest.exists():
            aside = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".damaged-"))
            with contextlib.suppress(FileNotFoundError):  # another process moved it
                os.replace(dest, aside / "tree")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another worker process won the race: fine
                raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_manifest(wheel: Path, limits: ZipLimits = WORKER_ZIP_LIMITS) -> dict[str, str]:
    """What unpacking ``wheel`` puts on disk: relative path -> sha256 of its bytes."""
    manifest: dict[str, str] = {}
    with _open_wheel(wheel, limits) as archive:
        for info in archive.infolist():
            target = _member_target(info.filename)
            if target is None or info.is_dir():
                continue
            digest = hashlib.sha256()
            with archive.open(info) as src:
                while chunk := src.read(_HASH_CHUNK):
                    digest.update(chunk)
            manifest[target.as_posix()] = digest.hexdigest()
    return manifest


def _tree_entries(root: Path, prefix: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``root`` but directories and ``__pycache__``, with its relative path."""
    with os.scandir(root) as entries:
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    yield from _tree_entries(Path(entry.path), rel + "/")
            else:
                yield rel, entry


def file_signature(path: Path) -> Signature | None:
    """The stat signature of one file; None when it is not there."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return ((path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode),)


def tree_signature(root: Path) -> Signature | None:
    """The stat signature of an unpacked tree (``__pycache__`` aside); None when it is not there."""
    rows = []
    try:
        for rel, entry in _tree_entries(root):
            st = entry.stat(follow_symlinks=False)
            rows.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode))
    except OSError:
        return None
    rows.sort()
    return tuple(rows)


def tree_damage(root: Path, manifest: Mapping[str, str]) -> str | None:
    """What is wrong with the tree unpacked from a wheel of ``manifest``; None if nothing."""
    seen: set[str] = set()
    for rel, entry in _tree_entries(root):
        if entry.is_symlink():
            return f"{rel} is a symbolic link"
        expected = manifest.get(rel)
        if expected is None:
            if rel.endswith(_IMPORTABLE):
                return f"{rel} is not in the wheel"
            continue
        seen.add(rel)
        try:
            actual = file_sha256(Path(entry.path))
        except OSError as exc:
            return f"{rel} cannot be read: {exc.strerror or exc}"
        if actual != expected:
            return f"{rel} was modified"
    missing = sorted(set(manifest) - seen)
    return f"{missing[0]} is missing" if missing else None


def check_tree(
    wheel: Path, dest: Path, limits: ZipLimits = WORKER_ZIP_LIMITS
) -> tuple[Signature, str | None]:
    """Verify ``dest`` against ``wheel``, unpacking it again if damaged or absent.

    Returns the tree's signature as it was verified (taken before hashing, so a
    change made meanwhile shows later) and what was damaged, if anything.
    """
    signature = tree_signature(dest)
    damage = None
    if signature is not None:
        damage = tree_damage(dest, wheel_manifest(wheel, limits))
        if damage is None:
            return signature, None
    elif dest.exists() or dest.is_symlink():
        damage = "it cannot be read"
    unpack_wheel(wheel, dest, replace=damage is not None, limits=limits)
    fresh = tree_signature(dest)
    if fresh is None:
        raise ArtifactError(f"unpacked wheel {dest.name[:12]} vanished from the cache")
    return fresh, damage


class ArtifactCache:
    """Job scripts and unpacked wheels on disk, fetched on first use, verified before use."""

    def __init__(
        self,
        root: Path,
        source: BlobSource,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        limits: ZipLimits = WORKER_ZIP_LIMITS,
    ) -> None:
        self.root = root
        self.limits = limits
        self._source = source
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._environments: dict[tuple[str, tuple[str, ...]], Environment] = {}
        self._recheck_at: dict[tuple[str, tuple[str, ...]], float] = {}
        self._verified: dict[Path, Signature] = {}
        """Files and trees verified in full by this process, with their signature then."""
        self._repairs: Counter[Path] = Counter()
        self.full_checks = 0
        """Files hashed in full and trees verified in full (a hook for tests)."""
        self.quick_checks = 0
        """Environments whose stat signature the hot path compared (a hook for tests)."""

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def script_path(self, sha256: str) -> Path:
        return self.root / "scripts" / f"{sha256}.py"

    def env_path(self, sha256: str) -> Path:
        return self.root / "envs" / sha256

    def cached_environment(
        self, script_sha256: str, wheel_sha256s: Iterable[str]
    ) -> Environment | None:
        """The environment if it is ready and unchanged (no await, for the hot path).

        None sends the caller to :meth:`environment`, which verifies again
        whatever changed on disk.
        """
        key = (script_sha256, tuple(wheel_sha256s))
        environment = self._environments.get(key)
        if environment is None:
            return None
        now = self._monotonic()
        if now < self._recheck_at[key]:
            return environment
        self.quick_checks += 1
        if self._unchanged(environment.script_path, file_signature) and all(
            self._unchanged(d, tree_signature) for d in environment.wheel_dirs
        ):
            self._recheck_at[key] = now + self._recheck_seconds
            return environment
        del self._environments[key]
        return None

    async def environment(
        self, script_sha256: str, wheel_sha256s: Iterable[str]
    ) -> Environment:
        """Fetch, unpack and verify whatever needs it; the environment to run a job in."""
        wheels = tuple(wheel_sha256s)
        key = (script_sha256, wheels)
        ready = self.cached_environment(script_sha256, wheels)
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
            generation=sum(self._repairs[path] for path in (script, *dirs)),
        )
        self._environments[key] = environment
        self._recheck_at[key] = self._monotonic() + self._recheck_seconds
        return environment

    async def fetch(self, sha256: str) -> Path:
        """The verified blob on disk."""
        check_sha256(sha256)
        path = self.blob_path(sha256)
        if self._unchanged(path, file_signature):
            return path
        return await self._once(f"blob:{sha256}", lambda: self._verified_file(sha256, path, "wheel"))

    async def script(self, sha256: str) -> Path:
        """The verified job script on disk."""
        check_sha256(sha256)
        path = self.script_path(sha256)
        if self._unchanged(path, file_signature):
            return path
        return await self._once(
            f"script:{sha256}", lambda: self._verified_file(sha256, path, "job script")
        )

    async def unpacked_wheel(self, sha256: str) -> Path:
        """The wheel's verified unpacked tree."""
        check_sha256(sha256)
        dest = self.env_path(sha256)
        if self._unchanged(dest, tree_signature):
            return dest

        async def verify() -> Path:
            blob = await self.fetch(sha256)
            if dest.exists():
                self.full_checks += 1
            try:
                signature, damage = await asyncio.to_thread(check_tree, blob, dest, self.limits)
            except OSError as exc:
                raise ArtifactError(
                    f"cannot unpack {_short(sha256)} in the cache: {exc}"
                ) from None
            if damage is not None:
                log.warning("unpacked wheel %s was damaged (%s): unpacked it again", _short(sha256), damage)
                self._repairs[dest] += 1
            self._verified[dest] = signature
            return dest

        return await self._once(f"env:{sha256}", verify)

    def _unchanged(self, path: Path, signature: Callable[[Path], Signature | None]) -> bool:
        """Verified in full by this process, and its stat signature is the same since."""
        verified = self._verified.get(path)
        return verified is not None and signature(path) == verified

    async def _verified_file(self, sha256: str, path: Path, what: str) -> Path:
        """``path`` once its sha256 is checked: hashed if it is on disk, else (or if wrong) fetched."""
        signature = file_signature(path)  # before hashing: a change meanwhile shows later
        if signature is not None:
            self.full_checks += 1
            try:
                actual = await asyncio.to_thread(file_sha256, path)
                problem = f"its sha256 is now {_short(actual)}"
            except OSError as exc:
                actual, problem = "", f"it cannot be read: {exc.strerror or exc}"
            if actual == sha256:
                self._verified[path] = signature
                return path
            log.warning(
                "cached %s %s failed verification (%s): deleted it, fetching it again",
                what, _short(sha256), problem,
            )
            _remove(path)
            self._repairs[path] += 1
        await self._download(sha256, path)
        fresh = file_signature(path)
        if fresh is not None:
            self._verified[path] = fresh
        return path

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


def _remove(path: Path) -> None:
    """Delete a damaged cache entry, whatever it turned into."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _consume_exception(task: asyncio.Task[Path]) -> None:
    """Every waiter may have gone: keep asyncio from warning about the exception."""
    if not task.cancelled():
        task.exception()
