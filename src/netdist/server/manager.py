"""Handler instances: job scripts in, life cycle, schedules, hot reload.

Every state change is written to the store first; runtimes and the
dispatcher's view follow it. An operator's change fails at once while the
store is out (``Store.write``); the server's own (a handler finished or
failed, the log) waits for the store and goes on by itself (``writer.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

from netdist import jobscript
from netdist.errors import (
    DiskFullError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobScriptError,
    NotFoundError,
    StoreUnavailableError,
)
from netdist.server.blobs import BlobStore
from netdist.server.clock import SYSTEM_CLOCK, Clock
from netdist.server.dispatcher import Dispatcher
from netdist.server.lease_model import HandlerSpec
from netdist.server.runtime import HandlerRuntime
from netdist.server.scheduler import Schedule, Scheduler
from netdist.server.script_check import ScriptChecker
from netdist.server.states import HandlerState
from netdist.server.store import catalog
from netdist.server.store import jobs as job_store
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.manager")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}
_ACTIVE = (HandlerState.RUNNING, HandlerState.PAUSED)


class HandlerManager:
    def __init__(self, store: Store, dispatcher: Dispatcher, blobs: BlobStore, *,
                 handler_call_timeout_seconds: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.handler_call_timeout_seconds = handler_call_timeout_seconds
        self.dispatcher = dispatcher
        self.blobs = blobs
        self.runtimes: dict[str, HandlerRuntime] = {}
        self.scheduler = Scheduler(clock=clock)
        self.next_start = self.scheduler.next_start  # handler id -> next scheduled start (Unix seconds)
        self._log_buffer: list[dict[str, object]] = []
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.script_checker = ScriptChecker()

    # -- server life cycle -------------------------------------------------------------

    async def startup(self) -> None:
        for record in await self.store.read(catalog.list_handlers):
            if record.state in _ACTIVE:
                self.log(record.id, "info", "server", "server restarted: resuming the handler")
                try:
                    await self._launch(record, active=record.state == HandlerState.RUNNING)
                except FailedPreconditionError as exc:
                    await self._set_state(record.id, HandlerState.FAILED, str(exc))
        self._tasks = [asyncio.create_task(self._flush_log_loop()), asyncio.create_task(self._schedule_loop())]

    async def shutdown(self) -> None:
        for runtime in list(self.runtimes.values()):
            await runtime.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush_log()

    # -- job scripts ---------------------------------------------------------------------

    async def add_job_script(self, filename: str, content: bytes, *, uploaded_by: str = ""
                             ) -> tuple[catalog.HandlerRecord, str]:
        try:
            source = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"{filename}: a job script must be UTF-8 text") from None
        # Off the event loop: the metadata in a thread (linear), the Python in a child process.
        script = await asyncio.to_thread(jobscript.parse, source, check_python=False)
        await self.script_checker.check(content)
        s = script.settings
        package = await self.store.read(catalog.current_package, s.package)
        if package is None:
            raise InvalidArgumentError(f"'package': no package named {s.package!r} is uploaded (netdist-admin upload-package)")
        if s.handler not in package.handlers:
            raise InvalidArgumentError(
                f"'handler': package {s.package!r} has no handler {s.handler!r}; it has: {', '.join(package.handlers) or 'none'}")
        sha = await asyncio.to_thread(self.blobs.put, content)
        settings_json = json.dumps(s.to_json_dict(), sort_keys=True)
        custom_json = json.dumps(dict(script.custom), sort_keys=True)
        async with self._lock:
            existing = await self.store.read(catalog.handler_by_key, s.package, s.handler, s.job)
            if existing is not None and existing.script_sha256 == sha:
                return existing, "no update needed"
            if existing is not None:
                await self.store.write(
                    catalog.update_handler, existing.id, script_sha256=sha, script_source=source,
                    settings_json=settings_json, custom_json=custom_json, script_uploaded_by=uploaded_by)
                self.log(existing.id, "info", "server", f"job script replaced ({filename}, sha256 {sha[:12]})")
                if existing.id in self.runtimes:
                    await self._relaunch(existing.id)
                return await self.store.read(catalog.get_handler, existing.id), "replaced"
            record = await self.store.write(
                catalog.insert_handler, id=uuid.uuid4().hex[:12], package=s.package, handler=s.handler,
                job_name=s.job, script_sha256=sha, script_source=source, settings_json=settings_json,
                custom_json=custom_json, state=HandlerState.IDLE, message="", handler_state_json="{}", summary="",
                total=None, exhausted=False, sequenced_errors=0, created_at=time.time(),
                script_uploaded_by=uploaded_by)
        self.log(record.id, "info", "server", f"handler instance created from {filename}")
        if s.auto_start:
            record = await self.control(record.id, "start")
        return record, "created"

    # -- control -------------------------------------------------------------------------

    async def control(self, ref: str, action: str) -> catalog.HandlerRecord:
        record = await self.store.read(catalog.resolve_handler, ref)
        act = {
            "start": self._start, "pause": self._pause, "stop": self._stop,
            "disable": self._disable, "enable": self._enable, "remove": self._remove,
        }.get(action)
        if act is None:
            raise InvalidArgumentError(f"unknown action {action!r}")
        async with self._lock:
            await act(record, HandlerState(record.state))
        if action == "remove":
            return record
        return await self.store.read(catalog.get_handler, record.id)

    async def _start(self, record: catalog.HandlerRecord, state: HandlerState) -> None:
        hid = record.id
        if state == HandlerState.DISABLED:
            raise FailedPreconditionError(f"handler {hid} is disabled: enable it first")
        if state == HandlerState.PAUSED:
            await self._set_state(hid, HandlerState.RUNNING, "")
            self.dispatcher.set_active(hid, True)
            self.runtimes[hid].wake()
        elif state != HandlerState.RUNNING:
            await self._launch(record, active=True)

    async def _pause(self, record: catalog.HandlerRecord, state: HandlerState) -> None:
        if state != HandlerState.RUNNING:
            raise FailedPreconditionError(f"handler {record.id} is {state}: only a running handler can be paused")
        self.dispatcher.set_active(record.id, False)
        await self._set_state(record.id, HandlerState.PAUSED, "")

    async def _stop(self, record: catalog.HandlerRecord, state: HandlerState) -> None:
        if state in _ACTIVE:
            await self._halt(record.id, HandlerState.STOPPED, "stopped by the operator")

    async def _disable(self, record: catalog.HandlerRecord, state: HandlerState) -> None:
        await self._halt(record.id, HandlerState.DISABLED, "disabled by the operator")

    async def _enable(self, record: catalog.HandlerRecord, state: HandlerState) -> None:
        if state in (HandlerState.DISABLED, HandlerState.FAILED):
            await self._set_state(record.id, HandlerState.IDLE, "")
            await self.store.write(catalog.update_handler, record.id, sequenced_errors=0)

    async def _remove(self, record: catalog.HandlerRecord, state: HandlerState) -> None:
        await self._halt(record.id, HandlerState.STOPPED, "removed")
        await self.store.write(catalog.delete_handler, record.id)
        self.next_start.pop(record.id, None)

    async def _launch(self, record: catalog.HandlerRecord, *, active: bool) -> None:
        package = await self.store.read(catalog.current_package, record.package)
        if package is None:
            raise FailedPreconditionError(f"package {record.package!r} is not uploaded (or was removed)")
        try:
            script = await asyncio.to_thread(jobscript.parse, record.script_source, check_python=False)
        except JobScriptError as exc:  # stored before a check was added or tightened
            raise FailedPreconditionError(f"its job script no longer passes the checks: {exc}") from None
        spec = HandlerSpec(
            handler_id=record.id, job_name=record.job_name, settings=script.settings,
            script_sha256=record.script_sha256, environment=tuple(package.environment),
        )
        counts = (await self.store.read(job_store.counts, record.id)).get(record.id, {})
        state = HandlerState.RUNNING if active else HandlerState.PAUSED
        await self.store.write(catalog.update_handler, record.id, state=state, message="",
                               started_at=time.time(), finished_at=None)
        runtime = HandlerRuntime(
            record, package, spec, writer=self.store.writer, dispatcher=self.dispatcher, blobs=self.blobs,
            log_sink=self.log, on_finished=self._finished, on_failed=self._failed,
            call_timeout_seconds=self.handler_call_timeout_seconds,
        )
        self.runtimes[record.id] = runtime
        self.dispatcher.register(spec, counts=counts, streak=record.sequenced_errors, active=active)
        runtime.start()
        self.log(record.id, "info", "server", "started" if active else "resumed paused")

    async def _relaunch(self, handler_id: str) -> None:
        runtime = self.runtimes.pop(handler_id)
        queue = self.dispatcher.table.handlers.get(handler_id)
        active = queue is not None and queue.active
        await runtime.stop()
        self.dispatcher.unregister(handler_id)
        await self._launch(await self.store.read(catalog.get_handler, handler_id), active=active)

    async def _halt(self, handler_id: str, state: HandlerState, message: str, *, revoke: bool = True,
                    waits: bool = False) -> None:
        runtime = self.runtimes.pop(handler_id, None)
        self.dispatcher.set_active(handler_id, False)
        await self._set_state(handler_id, state, message, waits=waits)
        if revoke:
            await self.dispatcher.revoke_handler(handler_id, message)
        self.dispatcher.unregister(handler_id)
        if runtime is not None:
            await runtime.stop()

    async def _set_state(self, handler_id: str, state: HandlerState, message: str, *, waits: bool = False) -> None:
        """``waits``: the server's own change, made once the store is back rather than failed."""
        values: dict[str, object] = {"state": state, "message": message}
        if state in (HandlerState.FINISHED, HandlerState.FAILED):
            values["finished_at"] = time.time()
        write = self.store.writer.run if waits else self.store.write
        await write(catalog.update_handler, handler_id, **values)
        self.log(handler_id, "error" if state == HandlerState.FAILED else "info", "server",
                 f"state {state}" + (f": {message}" if message else ""))

    async def _finished(self, handler_id: str) -> None:
        if self.runtimes.pop(handler_id, None) is None:
            return
        self.dispatcher.unregister(handler_id)
        await self._set_state(handler_id, HandlerState.FINISHED, "", waits=True)

    async def _failed(self, handler_id: str, message: str) -> None:
        if handler_id not in self.runtimes:
            return
        await self._halt(handler_id, HandlerState.FAILED, message, waits=True)

    def wake(self, handler_id: str) -> None:
        """Results or failures of a handler are stored: its runtime has work."""
        runtime = self.runtimes.get(handler_id)
        if runtime is not None:
            runtime.wake()

    def on_failing(self, handler_id: str, errors_in_a_row: int) -> None:
        """The lease table saw max-sequenced-errors failed results in a row (and hands out no more)."""
        runtime = self.runtimes.get(handler_id)
        if runtime is None:
            return
        limit = runtime.spec.settings.max_sequenced_errors
        task = asyncio.get_running_loop().create_task(self._failed(
            handler_id, f"{errors_in_a_row} failed results in a row (max-sequenced-errors = {limit})"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- packages ------------------------------------------------------------------------

    async def package_uploaded(self, package: catalog.PackageRecord) -> list[str]:
        """Move the running instances of a package to its new current version."""
        moved = []
        for runtime in self.runtimes.values():
            if runtime.record.package == package.name and runtime.package.id != package.id:
                self.log(runtime.handler_id, "info", "server",
                         f"package {package.name} {package.version} uploaded: restarting the handler host")
                runtime.reload(package)
                moved.append(runtime.handler_id)
        return moved

    # -- schedules ------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self._run_schedules()
            except (StoreUnavailableError, DiskFullError):
                pass  # the store's outage is logged once by the server; schedules run again after it
            except Exception:
                log.exception("schedule pass failed")

    async def _run_schedules(self) -> None:
        records = {record.id: record for record in await self.store.read(catalog.list_handlers)}
        schedules = {}
        for record in records.values():
            settings = json.loads(record.settings_json)
            if settings.get("schedule"):
                schedules[record.id] = Schedule(cron=settings["schedule"], time_zone=settings.get("time-zone"))
        for handler_id in self.scheduler.due(schedules):
            record = records[handler_id]
            # A failed handler waits for the operator (enable or start), like a disabled one.
            if record.state not in (*_ACTIVE, HandlerState.DISABLED, HandlerState.FAILED):
                self.log(record.id, "info", "server", f"schedule {schedules[handler_id].cron!r}: starting")
                try:
                    await self.control(record.id, "start")
                except (FailedPreconditionError, NotFoundError) as exc:
                    self.log(record.id, "warning", "server", f"scheduled start failed: {exc}")

    # -- log ----------------------------------------------------------------------------

    def log(self, handler_id: str, level: str, source: str, message: str) -> None:
        log.log(_LEVELS.get(level, logging.INFO), "[%s] %s", handler_id, message)
        self._log_buffer.append({"handler_id": handler_id, "at": time.time(), "level": level,
                                 "source": source, "message": message[:10_000]})

    async def _flush_log_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(0.2)
            rounds += 1
            with contextlib.suppress(Exception):
                await self._flush_log(prune=rounds % 300 == 0)

    async def _flush_log(self, *, prune: bool = False) -> None:
        entries, self._log_buffer = self._log_buffer, []
        if entries:  # kept through an outage: written once the store is back
            await self.store.writer.run(catalog.add_log, entries)
        if prune:
            for handler_id in list(self.runtimes):
                await self.store.writer.run(catalog.prune_log, handler_id)
