"""The worker's content-addressed artifact cache, verified before use.

Layout under the cache dir::

    blobs/<sha256>        every fetched blob, verified, written via temp file + os.replace
    scripts/<sha256>.py   job scripts (importable by path)
    envs/<sha256>/        each wheel unpacked once, via a temp dir + os.replace

Blobs come from the server's ``PackageService.Fetch`` (a
:class:`~netdist.worker.blob_source.BlobSource`); concurrent requests for one
hash share one fetch. A wheel not in the cache is held in memory as it
arrives (within a budget, :mod:`netdist.worker.held_blob`), unpacked from
there, and written to ``blobs/`` once its tree is in place: the first job in
a new environment waits for its bytes to reach the disk once, not twice.
:meth:`ArtifactCache.close` waits for those writes. This module decides what is fetched and checked when;
:mod:`netdist.worker.blob_source` fetches, :mod:`netdist.worker.integrity`
unpacks and checks. Any failure (not found,
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
  :attr:`~netdist.worker.job.Environment.script_generation` or
  ``wheels_generation``, so its jobs go to fresh executor children, not to
  ones that may have loaded the damaged code.

Workers sharing a cache dir may repair the same entry at once: each puts a
complete, verified copy in place with ``os.replace``, so the last one wins and
all are right.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from netdist.errors import ArtifactError
from netdist.removal import remove
from netdist.worker.blob_source import BlobSource, check_sha256, short, write_verified
from netdist.worker.held_blob import HeldBlob, MemoryBudget, receive
from netdist.worker.integrity import (
    WORKER_ZIP_LIMITS,
    Signature,
    Wheel,
    check_tree,
    file_sha256,
    file_signature,
    tree_signature,
)
from netdist.worker.job import Environment
from netdist.ziplimit import ZipLimits

log = logging.getLogger(__name__)
T = TypeVar("T")

RECHECK_SECONDS = 1.0
"""How often the hot path compares an environment's stat signature, at most."""
FETCHES_AT_ONCE = 2
"""Blobs fetched at once: more share the server's same bytes per second, and none is ready to unpack
until all are; two at a time, a wheel unpacks while the next ones arrive."""


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
        memory: MemoryBudget | None = None,
    ) -> None:
        self.root = root
        self.limits = limits
        self._memory = memory or MemoryBudget()
        self._source = source
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._fetches: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._environments: dict[tuple[str, tuple[str, ...]], Environment] = {}
        self._recheck_at: dict[tuple[str, tuple[str, ...]], float] = {}
        self._last: tuple[str, tuple[str, ...], Environment, float] | None = None
        """The last environment ``cached_environment`` found, by the very objects it was asked with, and
        until when it holds: a batch's leases share their handler's script and wheels objects, so the
        jobs after the first make no key (a tuple of tuples, hashed) and look nothing up."""
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

    def cached_environment(self, script_sha256: str, wheel_sha256s: Iterable[str]) -> Environment | None:
        """The environment if it is ready and unchanged (no await, for the hot path).

        None sends the caller to :meth:`environment`, which verifies again
        whatever changed on disk.
        """
        now = self._monotonic()
        last = self._last
        if last is not None and last[0] is script_sha256 and last[1] is wheel_sha256s and now < last[3]:
            return last[2]
        key = (script_sha256, tuple(wheel_sha256s))
        environment = self._environments.get(key)
        if environment is None:
            return None
        recheck_at = self._recheck_at[key]
        if now >= recheck_at:
            self.quick_checks += 1
            if not (
                self._unchanged(environment.script_path, file_signature)
                and all(self._unchanged(d, tree_signature) for d in environment.wheel_dirs)
            ):
                del self._environments[key]
                self._last = None
                return None
            recheck_at = self._recheck_at[key] = now + self._recheck_seconds
        if type(wheel_sha256s) is tuple:  # an iterator's identity would say nothing of its next contents
            self._last = (script_sha256, wheel_sha256s, environment, recheck_at)
        return environment

    async def environment(self, script_sha256: str, wheel_sha256s: Iterable[str]) -> Environment:
        """Fetch, unpack and verify whatever needs it; the environment to run a job in."""
        wheels = tuple(wheel_sha256s)
        key = (script_sha256, wheels)
        ready = self.cached_environment(script_sha256, wheels)
        if ready is not None:
            return ready
        script, *dirs = await asyncio.gather(self.script(script_sha256), *(self.unpacked_wheel(sha) for sha in wheels))
        environment = Environment(
            script_sha256=script_sha256,
            script_path=script,
            wheel_sha256s=wheels,
            wheel_dirs=tuple(dirs),
            script_generation=self._repairs[script],
            wheels_generation=sum(self._repairs[path] for path in dirs),
        )
        self._environments[key] = environment
        self._recheck_at[key] = self._monotonic() + self._recheck_seconds
        self._last = None
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
        return await self._once(f"script:{sha256}", lambda: self._verified_file(sha256, path, "job script"))

    async def unpacked_wheel(self, sha256: str) -> Path:
        """The wheel's verified unpacked tree."""
        check_sha256(sha256)
        dest = self.env_path(sha256)
        if self._unchanged(dest, tree_signature):
            return dest

        async def verify() -> Path:
            blob = await self._wheel(sha256)
            if dest.exists():
                self.full_checks += 1
            started = time.perf_counter()
            try:
                signature, damage = await asyncio.to_thread(check_tree, blob, dest, self.limits)
            except OSError as exc:
                raise ArtifactError(f"cannot unpack {short(sha256)} in the cache: {exc}") from None
            finally:
                if isinstance(blob, HeldBlob):
                    self._keep(blob)
            if damage is not None:
                log.warning("unpacked wheel %s was damaged (%s): unpacked it again", short(sha256), damage)
                self._repairs[dest] += 1
            self._verified[dest] = signature
            log.info("checked the unpacked %s in %.0f ms", short(sha256), (time.perf_counter() - started) * 1000)
            return dest

        return await self._once(f"env:{sha256}", verify)

    async def close(self) -> None:
        """Wait for the fetches and writes under way (a held wheel's write among them)."""
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _wheel(self, sha256: str) -> Wheel:
        """The verified wheel: its file when the cache has one (or is writing it), else fetched into memory."""
        path = self.blob_path(sha256)
        if f"blob:{sha256}" in self._inflight or path.exists():
            return await self.fetch(sha256)
        return await self._fetching(sha256, lambda: receive(self._source.chunks(sha256), sha256, path, self._memory))

    def _keep(self, blob: HeldBlob) -> None:
        """Write a held wheel to the cache in the background, then let its memory go."""
        path = self.blob_path(blob.sha256)

        async def write() -> Path:
            try:
                await asyncio.to_thread(blob.write, path)
            except OSError as exc:
                log.warning(
                    "cannot keep wheel %s in the cache (%s): it is fetched again when needed", short(blob.sha256), exc
                )
                raise ArtifactError(f"cannot store {short(blob.sha256)} in the cache: {exc}") from None
            finally:
                blob.release()
            fresh = file_signature(path)
            if fresh is not None:
                self._verified[path] = fresh
            return path

        self._start(f"blob:{blob.sha256}", write)

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
                problem = f"its sha256 is now {short(actual)}"
            except OSError as exc:
                actual, problem = "", f"it cannot be read: {exc.strerror or exc}"
            if actual == sha256:
                self._verified[path] = signature
                return path
            log.warning(
                "cached %s %s failed verification (%s): deleted it, fetching it again",
                what,
                short(sha256),
                problem,
            )
            remove(path)
            self._repairs[path] += 1
        await self._download(sha256, path)
        fresh = file_signature(path)
        if fresh is not None:
            self._verified[path] = fresh
        return path

    async def _download(self, sha256: str, dest: Path) -> Path:
        return await self._fetching(sha256, lambda: write_verified(self._source.chunks(sha256), sha256, dest))

    async def _fetching(self, sha256: str, receive: Callable[[], Awaitable[T]]) -> T:
        """Run a blob's fetch in its turn, logging it; a local failure to store it is an ArtifactError."""
        loop = asyncio.get_running_loop()
        if self._fetches is None or self._fetches[0] is not loop:  # tests run one cache in several loops
            self._fetches = (loop, asyncio.Semaphore(FETCHES_AT_ONCE))
        try:
            async with self._fetches[1]:
                log.info("fetching %s", short(sha256))
                started = time.perf_counter()
                received = await receive()
        except ArtifactError:
            raise
        except OSError as exc:
            raise ArtifactError(f"cannot store {short(sha256)} in the cache: {exc}") from None
        log.info("fetched %s in %.0f ms", short(sha256), (time.perf_counter() - started) * 1000)
        return received

    async def _once(self, key: str, make: Callable[[], Awaitable[Path]]) -> Path:
        """Run ``make`` once per key at a time; every concurrent caller shares it."""
        return await asyncio.shield(self._start(key, make))

    def _start(self, key: str, make: Callable[[], Awaitable[Path]]) -> asyncio.Task[Path]:
        """The task running ``make`` for ``key``: the one under way, or a new one."""
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
        return task


def _consume_exception(task: asyncio.Task[Path]) -> None:
    """Every waiter may have gone: keep asyncio from warning about the exception."""
    if not task.cancelled():
        task.exception()
