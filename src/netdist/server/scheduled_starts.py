"""Scheduled starts: each pass reads the job scripts' schedules from the store and starts the
handler instances that came due.

When a schedule is due is the scheduler's to say (:mod:`netdist.server.scheduler`,
on the injected clock); this module only feeds it and acts on its answer. A due
schedule starts its instance unless the life cycle says to leave it alone
(:data:`netdist.server.lifecycle.SCHEDULE_SKIPS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from netdist.errors import (
    DiskFullError,
    FailedPreconditionError,
    NotFoundError,
    StoreUnavailableError,
)
from netdist.server.clock import Clock
from netdist.server.lifecycle import SCHEDULE_SKIPS
from netdist.server.runtime import LogSink
from netdist.server.scheduler import Schedule, Scheduler
from netdist.server.states import HandlerState
from netdist.server.store import catalog
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.manager")
PASS_SECONDS = 0.5


class ScheduledStarts:
    def __init__(
        self, store: Store, *, clock: Clock, log_sink: LogSink, start: Callable[[str], Awaitable[object]]
    ) -> None:
        """``start``: start a handler instance by id (FailedPreconditionError, NotFoundError when it cannot)."""
        self._store = store
        self._log = log_sink
        self._start = start
        self.scheduler = Scheduler(clock=clock)
        self._task: asyncio.Task[None] | None = None

    @property
    def next_start(self) -> dict[str, float]:
        """Handler id -> its next scheduled start (Unix seconds), for display."""
        return self.scheduler.next_start

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="netdist-schedules")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> list[str]:
        """One pass: start every instance whose schedule is due; returns the ids it tried to start."""
        records = {record.id: record for record in await self._store.read(catalog.list_handlers)}
        schedules = {}
        for record in records.values():
            settings = json.loads(record.settings_json)
            if settings.get("schedule"):
                schedules[record.id] = Schedule(cron=settings["schedule"], time_zone=settings.get("time-zone"))
        tried = []
        for handler_id in self.scheduler.due(schedules):
            if HandlerState(records[handler_id].state) in SCHEDULE_SKIPS:
                continue
            tried.append(handler_id)
            self._log(handler_id, "info", "server", f"schedule {schedules[handler_id].cron!r}: starting")
            try:
                await self._start(handler_id)
            except (FailedPreconditionError, NotFoundError) as exc:
                self._log(handler_id, "warning", "server", f"scheduled start failed: {exc}")
        return tried

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PASS_SECONDS)
            try:
                await self.run_once()
            except (StoreUnavailableError, DiskFullError):
                pass  # the store's outage is logged once by the server; schedules run again after it
            except Exception:
                log.exception("schedule pass failed")
