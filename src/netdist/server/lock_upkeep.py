"""Locks kept up to date in the background: a new worker platform, a new package version.

When a worker of a platform that a running handler's lock does not hold
connects, the lock is resolved for that platform in the background; until
then the handler's jobs go to other workers (:meth:`HandlerSpec.serves`),
and a platform with no wheel is kept in the lock with pip's words (shown by
``jobs deps``, ``handlers show`` and ``workers list``) rather than failing
jobs. When a running handler's package changes, its lock is resolved again
with the new package; if that fails the old lock stays, and the handler's
log says why. A lock stored meanwhile by ``jobs add`` wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from netdist.errors import NetDistError
from netdist.platforms import Platform
from netdist.server.dependency_locks import DependencyLocker, package_digest
from netdist.server.deps_lock import Lock
from netdist.server.runtime import LogSink, RunningHandler
from netdist.server.store import catalog
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.locks")


class LockUpkeep:
    def __init__(
        self,
        store: Store,
        locker: DependencyLocker,
        *,
        runtimes: Mapping[str, RunningHandler],
        log_sink: LogSink,
        guard: Callable[[], asyncio.Lock],
    ) -> None:
        self._store = store
        self._locker = locker
        self._runtimes = runtimes
        self._log = log_sink
        self._guard = guard  # the manager's lock: a lock is stored under it, as jobs add stores one
        self.platforms: dict[str, Platform] = {}  # every platform a worker reported since the server started
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def platform_seen(self, platform: Platform) -> None:
        if platform.key in self.platforms:
            return
        self.platforms[platform.key] = platform
        for handler_id in list(self._runtimes):
            self.check(handler_id)

    def check(self, handler_id: str) -> None:
        """Bring the handler's lock up to date in the background (once more if a pass is under way)."""
        if handler_id in self._tasks:
            self._again.add(handler_id)
            return
        task = asyncio.create_task(self._update(handler_id), name=f"netdist-lock-{handler_id}")
        self._tasks[handler_id] = task
        task.add_done_callback(lambda t: self._done(handler_id, t))

    def _done(self, handler_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(handler_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("updating the lock of handler %s failed", handler_id, exc_info=task.exception())
        if handler_id in self._again and not task.cancelled():
            self._again.discard(handler_id)
            self.check(handler_id)

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _update(self, handler_id: str) -> None:
        record = await self._store.read(catalog.get_handler, handler_id)
        lock = Lock.from_json(record.deps_lock_json)
        package = await self._store.read(catalog.current_package, record.package)
        if lock.empty or package is None:
            return
        stale = lock.package_sha256 != package_digest(package)
        missing = [p for p in self.platforms.values() if p.key not in lock.platforms]
        if not stale and not missing:
            return
        try:
            if stale:
                new = await self._locker.lock(
                    source=record.script_source,
                    package=package,
                    previous=lock,
                    pinned=None,
                    refresh=False,
                    platforms=list(self.platforms.values()),
                )
            else:
                new = await self._locker.extend(lock, package, missing)
        except NetDistError as exc:  # a dependency conflict with the new package, pip past its time limit
            what = f"with package {package.name} {package.version}" if stale else "for a new worker platform"
            self._log(
                handler_id, "error", "server", f"its dependencies did not resolve {what}; its lock stays: {exc.message}"
            )
            return
        async with self._guard():
            current = await self._store.read(catalog.get_handler, handler_id)
            if current.deps_lock_json != record.deps_lock_json:
                self._again.add(handler_id)  # jobs add stored another lock meanwhile: look at that one
                return
            text = new.to_json()
            await self._store.write(catalog.update_handler, handler_id, deps_lock_json=text)
            runtime = self._runtimes.get(handler_id)
            if runtime is not None:
                runtime.set_lock(text)
        for key, platform_lock in new.platforms.items():
            if lock.platforms.get(key) != platform_lock:
                if platform_lock.error:
                    self._log(handler_id, "warning", "server", f"cannot be served on {key}: {platform_lock.error}")
                else:
                    self._log(handler_id, "info", "server", f"dependencies locked for {key}")
