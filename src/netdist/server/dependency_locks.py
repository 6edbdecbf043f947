"""Locks made and kept: when a job script's dependencies are resolved, and for which platforms.

A lock is resolved when a job script is added or replaced and its inputs
(the script's ``dependencies`` and ``requires-python``, a pinned lock, the
package's wheels) differ from the stored lock's, or when the operator asks
(``jobs add --refresh``); otherwise the stored lock is kept, so a run is
repeated exactly. The server's own platform is resolved first, then each
platform workers have reported. A platform that does not resolve is kept in
the lock with the resolver's words (shown by ``jobs deps``); when none
resolves the upload is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence

from netdist.errors import DependencyError
from netdist.platforms import Platform, this_platform
from netdist.server.clock import Clock
from netdist.server.deps_lock import Lock, PlatformLock, environment, lock_key, parse_pins, script_needs
from netdist.server.deps_resolver import PackageWheel, Resolver
from netdist.server.store import catalog


class DependencyLocker:
    def __init__(self, resolver: Resolver, *, clock: Clock) -> None:
        self.resolver = resolver
        self.clock = clock
        self.native = this_platform()

    async def lock(
        self,
        *,
        source: str,
        package: catalog.PackageRecord,
        previous: Lock,
        pinned: str | None,
        refresh: bool,
        platforms: Sequence[Platform] = (),
    ) -> Lock:
        """The lock for a job script about to be stored: the previous one when nothing it depends on changed.
        ``pinned`` None keeps the previous pinned lock (``refresh`` drops it)."""
        needs = await asyncio.to_thread(script_needs, source)
        if pinned is None:
            pinned = "" if refresh else previous.pinned
        if needs.empty and not pinned:
            return Lock()
        package_sha = package_digest(package)
        key = lock_key(needs, pinned=pinned, package_sha256=package_sha)
        if key == previous.key and not refresh:
            return previous
        lock = Lock(key=key, needs=needs, pinned=pinned, package_sha256=package_sha)
        resolved, first_error = await self._resolve(lock, package, [self.native, *platforms])
        if first_error is not None and not any(not p.error for p in resolved.values()):
            raise first_error
        return dataclasses.replace(lock, platforms=resolved)

    async def extend(self, lock: Lock, package: catalog.PackageRecord, platforms: Sequence[Platform]) -> Lock:
        """``lock`` with the platforms it lacks resolved (one that does not resolve is kept with pip's words)."""
        missing = [p for p in platforms if p.key not in lock.platforms]
        resolved, _ = await self._resolve(lock, package, missing)
        return dataclasses.replace(lock, platforms={**lock.platforms, **resolved})

    async def _resolve(
        self, lock: Lock, package: catalog.PackageRecord, targets: Sequence[Platform]
    ) -> tuple[dict[str, PlatformLock], DependencyError | None]:
        pins = parse_pins(lock.pinned)
        resolved: dict[str, PlatformLock] = {}
        first_error: DependencyError | None = None
        for target in {t.key: t for t in targets}.values():
            try:
                wheels = await self.resolver.resolve(
                    needs=lock.needs,
                    pins=pins,
                    package=package.name,
                    package_wheels=package_wheels(package),
                    target=target,
                    native=target.key == self.native.key,
                )
                resolved[target.key] = PlatformLock(
                    platform=target.to_json_dict(), wheels=wheels, resolved_at=self.clock.time()
                )
            except DependencyError as exc:
                first_error = first_error or exc
                resolved[target.key] = PlatformLock(
                    platform=target.to_json_dict(), error=exc.message, resolved_at=self.clock.time()
                )
        return resolved, first_error


def package_wheels(package: catalog.PackageRecord) -> list[PackageWheel]:
    """The package's wheel first, then the dependency wheels uploaded with it."""
    return [PackageWheel(filename=w["filename"], sha256=w["sha256"]) for w in (package.wheel, *package.dependencies)]


def package_digest(package: catalog.PackageRecord) -> str:
    return hashlib.sha256(json.dumps(package.environment).encode()).hexdigest()


def environments(package: catalog.PackageRecord, lock_json: str) -> dict[str, tuple[str, ...]]:
    """A handler's environment per platform key: the package's wheels with the lock's for that platform
    (the lock wins by project name). Key "" is the default: the server's own platform's, for a worker of a
    platform the lock does not hold (or that did not report one); the package's alone without a lock."""
    lock = Lock.from_json(lock_json)
    wheels = [package.wheel, *package.dependencies]
    out: dict[str, tuple[str, ...]] = {"": tuple(package.environment)}
    for key, platform_lock in lock.platforms.items():
        if not platform_lock.error:
            out[key] = environment(wheels, platform_lock.wheels)
    native = out.get(_native_key())
    if native is not None:
        out[""] = native
    return out


@functools.cache
def _native_key() -> str:
    return this_platform().key
