"""Handler instances: the life cycle carried out, and their runtimes kept in step with it.

What an action does in which state is the life cycle table's
(:mod:`netdist.server.lifecycle`); here each step is carried out. Job scripts
come in through :mod:`netdist.server.job_script_intake`, schedules start
instances through :mod:`netdist.server.scheduled_starts`, log lines go through
:mod:`netdist.server.handler_log`.

Every state change is written to the store first; runtimes and the
dispatcher's view follow it. An operator's change fails at once while the
store is out (``Store.write``); the server's own (a handler finished or
failed, the log) waits for the store and goes on by itself (``writer.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from typing import assert_never

from netdist import jobscript
from netdist.errors import FailedPreconditionError, JobScriptError
from netdist.server import lifecycle
from netdist.server.blobs import BlobStore
from netdist.server.clock import SYSTEM_CLOCK, Clock
from netdist.server.dependency_locks import DependencyLocker, environments
from netdist.server.deps_resolver import Resolver, ResolverConfig
from netdist.server.dispatcher import Dispatcher
from netdist.server.event_hub import HandlerChange
from netdist.server.handler_log import HandlerLog
from netdist.server.job_script_intake import JobScriptIntake, Outcome
from netdist.server.lease_model import HandlerSpec
from netdist.server.lifecycle import Effect, HandlerAction
from netdist.server.lock_upkeep import LockUpkeep
from netdist.server.runtime import RunningHandler
from netdist.server.scheduled_starts import ScheduledStarts
from netdist.server.states import HandlerState
from netdist.server.store import catalog
from netdist.server.store import jobs as job_store
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.manager")
START_WAIT_SECONDS = 5.0
"""How long an operator's start (``handlers start``, a job script's ``auto-start``, a running handler moved
to a new job script or package version) waits at most for the handler's host to come up, so that its
answer says ``failed`` when ``initialize`` or ``on_start`` raised. A slower handler is answered ``running``
meanwhile (the default CLI timeout is 10 s)."""


class HandlerManager:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        blobs: BlobStore,
        *,
        handler_call_timeout_seconds: float,
        clock: Clock = SYSTEM_CLOCK,
        resolver: ResolverConfig | None = None,
    ) -> None:
        self.store = store
        self.handler_call_timeout_seconds = handler_call_timeout_seconds
        self.dispatcher = dispatcher
        self.blobs = blobs
        self.clock = clock
        self.runtimes: dict[str, RunningHandler] = {}
        self.log = HandlerLog(store.writer, clock=clock)
        self.locker = DependencyLocker(Resolver(resolver or ResolverConfig(), blobs), clock=clock)
        self.intake = JobScriptIntake(store, blobs, clock=clock, log_sink=self.log, locker=self.locker)
        self.schedules = ScheduledStarts(store, clock=clock, log_sink=self.log, start=self._scheduled_start)
        self.next_start = self.schedules.next_start  # handler id -> next scheduled start (Unix seconds)
        self._lock = asyncio.Lock()
        self.locks = LockUpkeep(store, self.locker, runtimes=self.runtimes, log_sink=self.log, guard=lambda: self._lock)
        self._failing: set[asyncio.Task[None]] = set()  # handlers being failed for max-sequenced-errors
        self._runtime_tasks: set[asyncio.Task[None]] = set()  # every runtime's loop until it ends
        self.host_restarts: Counter[tuple[str, str, str]] = Counter()
        """(handler id, job name, reason) -> handler hosts replaced while their handler ran on, for the
        metrics: reason ``upgrade`` (a new package version) or ``script`` (its job script was replaced)."""

    # -- server life cycle -------------------------------------------------------------

    async def startup(self) -> None:
        for record in await self.store.read(catalog.list_handlers):
            if record.state in lifecycle.ACTIVE:
                self.log(record.id, "info", "server", "server restarted: resuming the handler")
                try:
                    await self._launch(record, active=record.state == HandlerState.RUNNING)
                except FailedPreconditionError as exc:
                    await self._set_state(record.id, HandlerState.FAILED, str(exc))
        self.log.start(running=lambda: list(self.runtimes))
        self.schedules.start()

    async def shutdown(self) -> None:
        await self.schedules.stop()  # no start from here on
        while self._failing:  # a handler being failed ends failed, not stopped
            await asyncio.gather(*self._failing, return_exceptions=True)
        await self.locks.stop()
        for runtime in list(self.runtimes.values()):
            await runtime.stop()
        # Runtimes that finished or failed by themselves may still be closing their hosts.
        await asyncio.gather(*self._runtime_tasks, return_exceptions=True)
        await self.log.stop()

    # -- job scripts ---------------------------------------------------------------------

    async def add_job_script(
        self,
        filename: str,
        content: bytes,
        *,
        uploaded_by: str = "",
        pinned_lock: str | None = None,
        refresh: bool = False,
        deadline: float = math.inf,
    ) -> tuple[catalog.HandlerRecord, str]:
        """Store a job script (see JobScriptIntake) with its dependency lock; a running instance moves to it,
        a new one with ``auto-start`` starts. Either waits for its new host to come up (``control``)."""
        script = await self.intake.check(filename, content, pinned_lock=pinned_lock, refresh=refresh)
        relaunched: RunningHandler | None = None
        async with self._lock:
            record, outcome = await self.intake.store(script, uploaded_by=uploaded_by)
            if outcome in (Outcome.CREATED, Outcome.REPLACED):
                self._changed(record, str(outcome), record.state, record.message)
            if outcome == Outcome.REPLACED and record.id in self.runtimes:
                await self._relaunch(record.id)
                relaunched = self.runtimes[record.id]
            elif outcome == Outcome.REPLACED and record.state == HandlerState.FAILED:
                await self._settle(record, why="a new job script cleared the error; start it to run again")
                record = await self.store.read(catalog.get_handler, record.id)
        if relaunched is not None:
            await self._wait_up(relaunched, deadline)
            record = await self.store.read(catalog.get_handler, record.id)
        if outcome == Outcome.CREATED and script.settings.auto_start:
            record = await self.control(record.id, HandlerAction.START, wait=True, deadline=deadline)
        return record, outcome

    # -- control -------------------------------------------------------------------------

    async def control(
        self, ref: str, action: str, *, wait: bool = False, deadline: float = math.inf
    ) -> catalog.HandlerRecord:
        """Carry out ``action`` (a HandlerAction) on the instance ``ref`` names; its record as it is now
        (as it was, for remove). InvalidArgumentError for an unknown action, FailedPreconditionError
        when the life cycle refuses it; nothing changes then.

        ``wait``: a start answers once the handler's host came up (``initialize`` and ``on_start`` ran), or
        failed (the record then says ``failed`` and why), at most START_WAIT_SECONDS and not past ``deadline``
        (the event loop's time; the caller's answer is due then). A host that was up already (a running
        handler's, a paused one's) is answered at once."""
        act = lifecycle.parse_action(action)
        record = await self.store.read(catalog.resolve_handler, ref)
        async with self._lock:
            await self._carry_out(record, lifecycle.step(record.id, HandlerState(record.state), act))
            runtime = self.runtimes.get(record.id) if act == HandlerAction.START else None
        if act == HandlerAction.REMOVE:
            return record
        if wait and runtime is not None:
            await self._wait_up(runtime, deadline)
        return await self.store.read(catalog.get_handler, record.id)

    async def wait_moved(self, handler_ids: list[str], deadline: float) -> None:
        """Wait until the instances a package upload moved (:meth:`reload_package`) run on their new
        hosts, or failed, at most START_WAIT_SECONDS and not past ``deadline`` (event loop time)."""
        moving = [runtime.wait_moved() for hid in handler_ids if (runtime := self.runtimes.get(hid)) is not None]
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(min(deadline, loop.time() + START_WAIT_SECONDS)):
                await asyncio.gather(*moving)

    async def _wait_up(self, runtime: RunningHandler, deadline: float) -> None:
        """Wait (outside the lock: other calls go on) until ``runtime``'s host came up or its loop ended,
        at most START_WAIT_SECONDS and not past ``deadline`` (event loop time)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(min(deadline, loop.time() + START_WAIT_SECONDS)):
                await runtime.wait_up()

    async def _carry_out(self, record: catalog.HandlerRecord, step: lifecycle.Step) -> None:
        hid = record.id
        match step.effect:
            case Effect.NOTHING:
                pass
            case Effect.LAUNCH:
                await self._launch(record, active=True)
            case Effect.RESUME:
                await self._set_state(hid, HandlerState.RUNNING, "")
                self.dispatcher.set_active(hid, True)
                self.runtimes[hid].wake()
            case Effect.PAUSE:
                self.dispatcher.set_active(hid, False)
                await self._set_state(hid, HandlerState.PAUSED, "")
            case Effect.HALT:
                assert step.target is not None
                await self._halt(hid, step.target, step.message)
            case Effect.SETTLE:
                await self._settle(record)
            case Effect.REMOVE:
                await self._halt(hid, HandlerState.STOPPED, step.message)
                await self.store.write(catalog.delete_handler, hid)
                self.next_start.pop(hid, None)
                self.dispatcher.forget(hid)
                self._changed(record, "removed", HandlerState.STOPPED, step.message)
            case _ as unreachable:
                assert_never(unreachable)

    async def _settle(self, record: catalog.HandlerRecord, *, why: str = "") -> None:
        """Enable, or a new job script for a failed handler: the error and the streak forgotten, the state
        where its last run got to."""
        state = lifecycle.settled_state(ran=record.started_at is not None, went_to_the_end=record.exhausted)
        await self.store.write(catalog.update_handler, record.id, state=state, message="", sequenced_errors=0)
        self._changed(record, "state", state, "")
        self.log(record.id, "info", "server", f"state {state}" + (f": {why}" if why else ""))

    async def _scheduled_start(self, handler_id: str) -> None:
        await self.control(handler_id, HandlerAction.START)

    async def _launch(self, record: catalog.HandlerRecord, *, active: bool) -> None:
        package = await self.store.read(catalog.current_package, record.package)
        if package is None:
            raise FailedPreconditionError(f"package {record.package!r} is not uploaded (or was removed)")
        try:
            script = await asyncio.to_thread(jobscript.parse, record.script_source, check_python=False)
        except JobScriptError as exc:  # stored before a check was added or tightened
            raise FailedPreconditionError(f"its job script no longer passes the checks: {exc}") from None
        envs = environments(package, record.deps_lock_json)
        spec = HandlerSpec(
            handler_id=record.id,
            job_name=record.job_name,
            settings=script.settings,
            script_sha256=record.script_sha256,
            environment=envs[""],
            environments=envs,
            platform_locked=bool(record.deps_lock_json),
            script_name=record.script_name,
        )
        tally = await self.store.read(job_store.tally, record.id)
        state = HandlerState.RUNNING if active else HandlerState.PAUSED
        await self.store.write(
            catalog.update_handler,
            record.id,
            state=state,
            message="",
            started_at=self.clock.time(),
            finished_at=None,
            exhausted=False,
        )
        self._changed(record, "state", state, "")
        runtime = RunningHandler(
            record,
            package,
            spec,
            writer=self.store.writer,
            dispatcher=self.dispatcher,
            blobs=self.blobs,
            log_sink=self.log,
            on_finished=self._finished,
            on_failed=self._failed,
            on_restart=self._host_restarted,
            call_timeout_seconds=self.handler_call_timeout_seconds,
            new_run=record.state in (HandlerState.IDLE, HandlerState.FINISHED),
        )
        self.runtimes[record.id] = runtime
        self.dispatcher.register(spec, tally=tally, streak=record.sequenced_errors, active=active)
        runtime.start()
        assert runtime.task is not None
        self._runtime_tasks.add(runtime.task)
        runtime.task.add_done_callback(self._runtime_tasks.discard)
        self.log(record.id, "info", "server", "started" if active else "resumed paused")
        if record.deps_lock_json:
            self.locks.check(record.id)  # a worker platform it lacks, a package changed since

    async def _relaunch(self, handler_id: str) -> None:
        runtime = self.runtimes.pop(handler_id)
        queue = self.dispatcher.table.handlers.get(handler_id)
        active = queue is not None and queue.active
        await runtime.stop()
        self.dispatcher.unregister(handler_id)
        await self._launch(await self.store.read(catalog.get_handler, handler_id), active=active)
        self._host_restarted(runtime.record, "script")

    async def _halt(
        self, handler_id: str, state: HandlerState, message: str, *, revoke: bool = True, waits: bool = False
    ) -> None:
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
            values["finished_at"] = self.clock.time()
        if state == HandlerState.FINISHED:
            values["exhausted"] = True  # its run went to the end: enable after disable says finished again
        write = self.store.writer.run if waits else self.store.write
        await write(catalog.update_handler, handler_id, **values)
        self.dispatcher.hub.handler_changed(
            HandlerChange(handler_id=handler_id, change="state", state=state, message=message)
        )
        self.log(
            handler_id,
            "error" if state == HandlerState.FAILED else "info",
            "server",
            f"state {state}" + (f": {message}" if message else ""),
        )

    def _changed(self, record: catalog.HandlerRecord, change: str, state: str, message: str) -> None:
        """Tell the watchers (:mod:`netdist.server.event_hub`)."""
        self.dispatcher.hub.handler_changed(
            HandlerChange(
                handler_id=record.id,
                change=change,
                state=state,
                message=message,
                job_name=record.job_name,
                package=record.package,
                handler=record.handler,
            )
        )

    # -- what runtimes and the dispatcher report ------------------------------------------

    def _host_restarted(self, record: catalog.HandlerRecord, reason: str) -> None:
        self.host_restarts[(record.id, record.job_name, reason)] += 1

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

    def on_failing(self, handler_id: str, errors_in_a_row: int, last_error: str) -> None:
        """The lease table saw max-sequenced-errors failed results in a row (and hands out no more).
        Called synchronously by the dispatcher: the failing runs as a task, awaited on shutdown."""
        runtime = self.runtimes.get(handler_id)
        if runtime is None:
            return
        limit = runtime.spec.settings.max_sequenced_errors
        task = asyncio.create_task(
            self._failed(
                handler_id,
                f"{errors_in_a_row} failed results in a row (max-sequenced-errors = {limit}); the last: {last_error}",
            ),
            name=f"netdist-failing-{handler_id}",
        )
        self._failing.add(task)
        task.add_done_callback(self._failing_done)

    def _failing_done(self, task: asyncio.Task[None]) -> None:
        self._failing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("failing handler task failed", exc_info=task.exception())

    # -- packages ------------------------------------------------------------------------

    def reload_package(self, package: catalog.PackageRecord) -> list[str]:
        """Move the running instances of a package to its new current version (each at its next
        safe point); the ids of those that move."""
        moved = []
        for runtime in self.runtimes.values():
            if runtime.record.package == package.name and runtime.package.id != package.id:
                self.log(
                    runtime.handler_id,
                    "info",
                    "server",
                    f"package {package.name} {package.version} uploaded: restarting the handler host",
                )
                runtime.reload(package)
                moved.append(runtime.handler_id)
                if runtime.record.deps_lock_json:
                    self.locks.check(runtime.handler_id)  # its lock resolved again with the new package
        return moved
