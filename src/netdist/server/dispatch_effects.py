"""How the dispatcher carries out what the lease table decided (its ``Effects``): revocations and
dropped streams to the workers, wake-ups and failure streaks to the handlers, requeues to the store,
and a recount when the store and the table disagree. A mixin of
:class:`~netdist.server.dispatcher.Dispatcher`, which owns the attributes declared here."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from netdist.server.clock import Clock
from netdist.server.lease_model import Effects
from netdist.server.leases import LeaseTable
from netdist.server.result_acks import log_charged
from netdist.server.store import jobs as job_store
from netdist.server.store.writer import GroupCommitWriter
from netdist.server.worker_links import WorkerLinks

log = logging.getLogger("netdist.server.dispatcher")


class HandlerEvents(Protocol):
    """What the dispatcher tells the handler side (the manager); given to ``start``."""

    def wake(self, handler_id: str) -> None:
        """Results or failures of the handler are stored: it has work."""
        ...

    def on_failing(self, handler_id: str, errors_in_a_row: int, last_error: str) -> None:
        """The handler reached its max-sequenced-errors (the table hands out no more of its jobs);
        ``last_error``: the last failed result's ``Type: message``."""
        ...


class EffectWriter:
    table: LeaseTable
    links: WorkerLinks
    writer: GroupCommitWriter
    clock: Clock
    _events: HandlerEvents | None
    _tasks: set[asyncio.Task[Any]]

    def kick(self) -> None:
        raise NotImplementedError

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        raise NotImplementedError

    def _act(self, effects: Effects) -> asyncio.Future[None] | None:
        """Tell workers and handlers what the table decided and submit its writes, at once.

        Synchronous on purpose: a transition's writes must reach the writer's queue
        before anything else can happen (an await would let a dispatch pass lease a
        requeued job, and its lease write would reach the store before the requeue).
        Returns the task that checks what the store did, or None when nothing was written."""
        self._tell(effects)
        requeued = self._write_requeues(effects)
        if requeued is not None or effects.pick:
            self.kick()
        return requeued

    async def _apply(self, effects: Effects) -> None:
        """``_act``, then wait until the store has done it."""
        requeued = self._act(effects)
        if requeued is not None:
            await requeued

    def _tell(self, effects: Effects) -> None:
        self.links.revoke(effects.revocations)
        for worker_id in effects.silent:
            state = self.table.workers.get(worker_id)
            silent = state.silent_after_seconds if state is not None else self.table.silent_after_seconds
            log.warning("worker %s sent nothing for %g s; dropping its stream", worker_id, silent)
            self.links.close(worker_id)  # its stream ends; disconnect() follows from there
        events = self._events
        if events is None:
            return
        for handler_id in effects.wake:
            events.wake(handler_id)
        for handler_id, (streak, last_error) in effects.failing.items():
            events.on_failing(handler_id, streak, last_error)

    def _write_requeues(self, effects: Effects) -> asyncio.Future[None] | None:
        """Submit the requeue write now (in decision order); the returned task checks what the store did."""
        requeues = effects.requeues
        if not requeues:
            return None
        write = self.writer.submit(job_store.requeue, requeues, self.clock.time())
        log_charged(requeues)

        async def check() -> None:
            try:
                stored = await write
            except Exception:
                log.exception("could not store %d requeued jobs", len(requeues))
                await self._recount({q.handler_id for q in requeues})
                return
            if len(stored) < len(requeues):
                log.error("the store refused %d requeues the lease table made; recounting", len(requeues) - len(stored))
                await self._recount({q.handler_id for q in requeues if q.job_id not in stored})

        task = asyncio.ensure_future(check())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _recount(self, handler_ids: set[str]) -> None:
        """Memory and store disagree (a bug, or another writer): take the store's counts, and
        read its available jobs again from the start, so that none is left out of the queue."""
        for handler_id in handler_ids:
            stored = await self.writer.run(job_store.tally, handler_id)
            self.table.reset_counts(handler_id, stored.counts, stored.pruned)
            self.table.rescan(handler_id)
        self.kick()
