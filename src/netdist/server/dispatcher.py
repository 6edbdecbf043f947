"""The dispatcher: the lease table's hands. It feeds the table events, writes what
the table decided to the store, and tells the workers.

A lease of a job the store holds as it is goes to its worker at once, held
lazily (written only if it lasts, server/leases.py), any other once its write
committed; a new job counts as
held as soon as its insert is queued (``jobs_queued``); results
are acknowledged only after they are committed, and the store writes go to the
group-commit writer in the order the table decided them. The table (server/leases.py)
decides everything about leases; nothing here keeps a second copy of it.
Protobuf stays in the servicer: workers are reached through their ``WorkerLink``
(:mod:`netdist.server.worker_links`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from netdist.errors import ResultsNotStoredError
from netdist.server.clock import Clock
from netdist.server.dispatch_effects import EffectWriter, HandlerEvents
from netdist.server.event_hub import EventHub, WorkerChange
from netdist.server.heartbeat_pace import SILENT_INTERVALS, HeartbeatPace
from netdist.server.host_protocol import NewJob
from netdist.server.job_ids import JobIds
from netdist.server.lease_model import (
    HandlerSpec,
    Lease,
    ReadyJob,
    Ref,
    ResultIn,
    Settlement,
    Verdict,
    WorkerInfo,
    short_extra,
)
from netdist.server.leases import LeaseTable
from netdist.server.policy_wake import PolicyWake
from netdist.server.result_acks import result_acks
from netdist.server.result_inbox import ResultInbox
from netdist.server.store import catalog, credentials
from netdist.server.store import jobs as job_store
from netdist.server.store.writer import SOON_ITEMS, GroupCommitWriter
from netdist.server.tallies import DispatchTally
from netdist.server.tokens import digest
from netdist.server.worker_admission import admit
from netdist.server.worker_links import WorkerLink, WorkerLinks
from netdist.stage_trace import stamp

log = logging.getLogger("netdist.server.dispatcher")
REFILL_BATCH = 2000
REFILL_BELOW = 500
QUEUED_UNSTORED_JOBS = 10_000
"""New jobs join a handler's queue in memory (and are leased before their insert commits) while it holds
at most this many, and at most QUEUED_UNSTORED_BYTES of their inputs; the others wait in the store for a
refill. At REFILL_BATCH, a handler that enqueued faster than its jobs ran (most do, by LOW_WATER) had
nearly every job written, read back and only then leased: a fifth of the writer's time at 20,000 jobs/s."""
QUEUED_UNSTORED_BYTES = 8 * 1024 * 1024
TICK_SECONDS = 0.1
LAZY_LEASE_SECONDS = 1.0
"""A lease held lazily (server/leases.py) is written once it has lasted this long, so that a server
restarted while its job runs adopts it; a shorter job's lease is never written: its result's write
says it all. 0: every lease is written when it is made."""
COUNTS_FLUSH_SECONDS = 1.0


class Dispatcher(EffectWriter):
    def __init__(
        self,
        writer: GroupCommitWriter,
        *,
        clock: Clock,
        heartbeat: HeartbeatPace,
        reconnect_grace_seconds: float,
        lazy_lease_seconds: float = LAZY_LEASE_SECONDS,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.heartbeat_pace = heartbeat
        self.lazy_lease_seconds = lazy_lease_seconds
        self.table = LeaseTable(
            clock=clock,
            reconnect_grace_seconds=reconnect_grace_seconds,
            silent_after_seconds=heartbeat.base_seconds * SILENT_INTERVALS,
            lazy_leases=lazy_lease_seconds > 0,
        )
        self.links = WorkerLinks()
        self.inbox = ResultInbox()  # committed results for the handlers' runtimes
        self.job_ids = JobIds(writer)
        self.tally = DispatchTally()  # leases, results and refusals counted per batch, for the metrics
        self.resting: dict[str, tuple[str, dict[str, int]]] = {}
        """Handler id -> (job name, job counts) of handlers that stopped running since the server started:
        their last counts, so the metrics still show a finished handler's totals."""
        self.hub = EventHub(self.table, clock=clock)  # what AdminService.Watch streams
        self._events: HandlerEvents | None = None  # None until start: nothing happens before it
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._last_flush = clock.monotonic()
        self.policy_wake = PolicyWake(clock=clock)  # picks when an idle window ends or a day starts

    # -- life cycle -----------------------------------------------------------

    async def start(self, events: HandlerEvents) -> None:
        """Adopt the leases the store holds from before a restart, and today's run time per worker;
        from now on, ``events`` hears of the handlers' results and failing streaks."""
        self._events = events
        self.job_ids.prefetch()
        usage = self.table.usage
        usage.seed(await self.writer.run(job_store.run_time_since, usage.day_start()))
        await self.writer.run(job_store.skip_unstored_leases)
        now = self.clock.monotonic()
        for r in await self.writer.run(job_store.leased):
            self.table.adopt(
                Lease(
                    job_id=r.id,
                    lease_no=r.lease_no,
                    handler_id=r.handler_id,
                    worker_id=r.worker_id or "",
                    attempt=r.attempts + 1,
                    input=r.input.encode(),
                    leased_at=r.leased_at or 0.0,
                    leased_mono=now,
                )
            )
        self._loops = [asyncio.create_task(self._dispatch_loop()), asyncio.create_task(self._timer_loop())]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._write_lazy_leases(self.table.due_leases(math.inf))  # the next server adopts them
        with contextlib.suppress(Exception):
            await self._flush_worker_counts()
        await self.hub.stop()
        self.links.drain_all("server shutting down")
        for task in self._loops:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def kick(self) -> None:
        self._kick.set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatcher task failed", exc_info=task.exception())

    # -- handlers ---------------------------------------------------------------

    def register(self, spec: HandlerSpec, *, tally: job_store.Tally, streak: int, active: bool) -> None:
        self.resting.pop(spec.handler_id, None)
        self.table.add_handler(spec, counts=tally.counts, streak=streak, active=active, pruned=tally.pruned)
        self.policy_wake.changed()
        self.kick()  # jobs already in the store (a restart, a start after stop) wait for a refill pass

    def update_spec(self, spec: HandlerSpec) -> None:
        self.table.update_spec(spec)
        self.policy_wake.changed()

    def unregister(self, handler_id: str) -> None:
        queue = self.table.handlers.get(handler_id)
        if queue is not None:
            self.resting[handler_id] = (queue.spec.job_name, {k: n for k, n in queue.counts.items() if n})
        self.hub.handler_gone(handler_id)
        self.table.remove_handler(handler_id)

    def forget(self, handler_id: str) -> None:
        """The handler was removed: its last counts go too."""
        self.resting.pop(handler_id, None)

    def set_active(self, handler_id: str, active: bool) -> None:
        self.table.set_active(handler_id, active)
        self.policy_wake.changed()
        self.kick()

    def refill_cursor(self, handler_id: str) -> int | None:
        """Where the transaction that adds a handler's jobs reads its queue's refill from, or None (the
        queue is full enough, or a refill is under way): see :meth:`jobs_added`."""
        return self.table.refill_with_enqueue(handler_id, REFILL_BELOW)

    def jobs_added(self, handler_id: str, count: int, refill: Sequence[ReadyJob] | None = None) -> None:
        """``count`` jobs were committed; ``refill``: the available jobs their transaction read back
        from the cursor :meth:`refill_cursor` gave (None: it gave none, or the write failed)."""
        if count:
            self.table.enqueued(handler_id, count)
        if refill is not None:
            self.table.refilled(handler_id, refill, more=len(refill) == REFILL_BATCH)
        if count:
            self.kick()

    def may_queue_unstored(self, handler_id: str, jobs: Sequence[NewJob]) -> bool:
        """Whether a handler's new jobs may be queued and leased before their insert commits: when its
        queue in the lease table is caught up with the store and stays within QUEUED_UNSTORED_JOBS and
        about QUEUED_UNSTORED_BYTES (``LeaseBook.may_queue_unstored``). Otherwise they come from the
        store after the commit, as ``jobs_added`` says."""
        return self.table.may_queue_unstored(
            handler_id,
            len(jobs),
            QUEUED_UNSTORED_JOBS,
            nbytes=sum(len(job.input_json) for job in jobs),  # characters: the bytes of ASCII text
            max_bytes=QUEUED_UNSTORED_BYTES,
        )

    def jobs_queued(self, handler_id: str, ids: Sequence[int], jobs: Sequence[NewJob]) -> None:
        """New jobs whose insert the writer has just queued (``may_queue_unstored`` allowed it) join
        the lease table and are leased: a few (a lone job's) at once, before the write the loop may run
        this turn (``submit_soon``); more at the loop's next turn, after the handler's next call went to
        its host, so that the host makes the next jobs while these are leased (leasing 2,000 took the
        loop 10-15 ms, which the host had waited through). Their leases' write queues behind the insert,
        mostly into its transaction, and every later write about them behind both."""
        self.table.queue_unstored(
            handler_id,
            [
                ReadyJob(job_id, 0, 0, job.input_json.encode(), True, short_extra(job.extra_json))
                for job_id, job in zip(ids, jobs, strict=True)
            ],
        )
        if len(ids) <= SOON_ITEMS:
            self._dispatch_now()
        else:
            self.kick()

    def jobs_not_stored(self, handler_id: str, job_ids: Sequence[int]) -> None:
        """The insert of jobs queued by :meth:`jobs_queued` failed."""
        self._act(self.table.withdraw(handler_id, job_ids))

    async def revoke_handler(self, handler_id: str, reason: str) -> None:
        """Take back every lease of a handler (stopped or removed); the jobs stay available, uncharged."""
        await self._apply(self.table.revoke_handler(handler_id, reason))

    # -- workers ------------------------------------------------------------------

    async def connect(
        self,
        link: WorkerLink,
        info: WorkerInfo,
        held: Iterable[Ref],
        *,
        hostname: str,
        version: str,
        credential: str = "",
        platform_json: str = "",
    ) -> str | None:
        """Admit a worker's stream (:mod:`netdist.server.worker_admission`); the credential newly bound
        to its id, if one was issued. A refused Hello changes nothing."""
        issued = await admit(
            self.writer, info, credential, hostname=hostname, version=version, platform_json=platform_json
        )
        self.links.attach(info.worker_id, link)
        requeued = self._act(self.table.connect(info, held))
        self._pace_heartbeats(info.worker_id)
        self.hub.worker_changed(
            WorkerChange(
                worker_id=info.worker_id,
                change="connected",
                name=info.name,
                slots=info.slots,
                labels=info.labels,
                hostname=hostname,
                version=version,
            )
        )
        if requeued is not None:
            await requeued
        self.kick()
        return issued

    def longest_heartbeat_interval(self) -> float:
        """The longest heartbeat interval a connected worker was told (a worker that hangs is dropped
        after three of them); the configured one when none is connected."""
        told = (w.silent_after_seconds for w in self.table.workers.values() if w.connected)
        return max(told, default=self.table.silent_after_seconds) / SILENT_INTERVALS

    def heartbeat_interval(self, worker_id: str) -> float:
        """The heartbeat interval the connected worker was told."""
        state = self.table.workers.get(worker_id)
        if state is None or not state.connected:
            return self.heartbeat_pace.base_seconds
        return state.silent_after_seconds / SILENT_INTERVALS

    def _pace_heartbeats(self, worker_id: str) -> None:
        """A worker joined: its heartbeat interval, and a longer one for the others if their number
        grew enough (:mod:`netdist.server.heartbeat_pace`)."""
        interval, everyone = self.heartbeat_pace.joined(len(self.links))
        self.table.set_silent_after(worker_id, interval * SILENT_INTERVALS)
        if everyone is None:
            return
        for other in self.table.silent_after_below(everyone * SILENT_INTERVALS):
            link = self.links.get(other)
            if link is not None:
                link.send_heartbeat_interval(everyone)
                self.table.set_silent_after(other, everyone * SILENT_INTERVALS)
        log.info("%d workers connected: their heartbeat interval is now %g s", len(self.links), everyone)

    def credential_received(self, worker_id: str, credential: str) -> None:
        """The worker spoke after the Welcome that carried its new credential: it has it."""
        self._spawn(self.writer.run(credentials.confirm_credential, worker_id, digest(credential)))

    async def disconnect(self, worker_id: str, link: WorkerLink) -> None:
        if not self.links.detach(worker_id, link):
            return  # a newer stream of this worker took over
        self.table.disconnect(worker_id)
        state = self.table.workers.get(worker_id)
        self.hub.worker_changed(
            WorkerChange(worker_id=worker_id, change="disconnected", name=state.name if state else "")
        )
        with contextlib.suppress(Exception):
            await self._flush_worker_counts()
            await self.writer.run(catalog.worker_disconnected, worker_id)

    async def remove_worker(
        self, worker_id: str, why: str = "this worker was removed by the operator; it may connect again"
    ) -> int:
        """End the worker's stream, telling it ``why``, and take its leases back; how many."""
        # Revoke while the stream is still open (messages are written in order,
        # then it closes), so that the worker kills those jobs instead of finishing them.
        effects, count = self.table.remove_worker(worker_id, "worker removed")
        await self._apply(effects)
        if self.links.drop(worker_id, why):
            with contextlib.suppress(Exception):
                await self.writer.run(catalog.worker_disconnected, worker_id)
        return count

    def set_capacity(self, worker_id: str, jobs: int) -> None:
        self.table.set_capacity(worker_id, jobs)
        self.kick()

    def started(self, worker_id: str, refs: Iterable[Ref]) -> None:
        self.tally.dispatch_seconds.observe_many(self.table.started(worker_id, refs))

    def hand_back(self, worker_id: str, refs: Iterable[Ref], reason: str) -> None:
        self._act(self.table.hand_back(worker_id, refs, reason))

    def progress(self, worker_id: str, items: Iterable[tuple[Ref, float, str]]) -> None:
        for ref, percent, text in items:
            self.table.progress(worker_id, ref, percent, text)
        self.table.seen(worker_id)

    def heartbeat(self, worker_id: str) -> None:
        self.table.seen(worker_id)

    # -- dispatch -----------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._dispatch_now()

    def _dispatch_now(self) -> None:
        try:
            self._dispatch_once()
        except Exception:
            log.exception("dispatch pass failed")

    def _dispatch_once(self) -> None:
        for handler_id, cursor in self.table.refills_wanted(REFILL_BELOW):
            self._spawn(self._refill(handler_id, cursor))
        leases = self.table.pick()
        if leases:  # most are held lazily; one write for the others, of every worker, queued before any is sent
            unstored = [lease for lease in leases if not lease.stored]
            if unstored:
                self._spawn(self._commit_leases(unstored, self.writer.submit(job_store.lease, unstored)))
            self._send([lease for lease in leases if lease.sent])

    async def _write_lazy_leases(self, due: list[Lease]) -> None:
        """Write leases held lazily (``LeaseTable.due_leases``): a restarted server adopts them."""
        if not due:
            return
        write = self.writer.submit(job_store.lease, due)
        try:
            await write
        except Exception:
            log.exception("could not write %d leases held lazily; trying again", len(due))
            self.table.write_later(due)
            return
        await self._commit_leases(due, write)  # the store refused none of them, unless memory and store disagree

    def _send(self, leases: list[Lease]) -> None:
        if leases:
            self.links.send_leases(leases, {q.handler_id: q.spec for q in self.table.handlers.values()})
            stamp("leases-sent")
            self.tally.leases += len(leases)

    async def _refill(self, handler_id: str, cursor: int) -> None:
        try:
            jobs = await self.writer.run(job_store.load_available, handler_id, cursor, REFILL_BATCH)
        except Exception:
            self.table.refill_failed(handler_id)
            raise
        if self.table.refilled(handler_id, jobs, more=len(jobs) == REFILL_BATCH):
            self.kick()

    async def _commit_leases(self, leases: list[Lease], write: Awaitable[set[int]]) -> None:
        try:
            stored = await write
        except Exception:
            log.exception("could not store %d leases; revoked, they go back to the queue", len(leases))
            self._act(self.table.leases_failed(leases))
            self.kick()
            return
        stamp("leases-committed")
        send, refused, effects = self.table.leases_stored(leases, stored)
        self._send(send)
        requeued = self._act(effects)
        if refused:
            log.error(
                "the store refused %d leases the lease table made (jobs %s); reading the store again",
                len(refused),
                [lease.job_id for lease in refused[:10]],
            )
            await self._recount({lease.handler_id for lease in refused})
        if requeued is not None:
            await requeued

    # -- results ------------------------------------------------------------------

    async def on_results(self, worker_id: str, results: Sequence[ResultIn]) -> None:
        """Fence, store and acknowledge a batch of results from one worker."""
        stamp("results-received")
        verdicts, accepted, effects = self.table.settle(worker_id, results)
        self.tally.dispatch_seconds.observe_many(effects.waited)
        at = self.clock.time()
        # A few results (a lone job's): written by the loop itself if the writer is idle, reaching the handler sooner.
        submit = self.writer.submit_soon if len(accepted) <= SOON_ITEMS else self.writer.submit
        counted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        write = (
            submit(
                job_store.store_settlements,
                accepted,
                at,
                dict(effects.streaks),
                early=lambda batch: self._to_handlers(batch, counted),
            )
            if accepted
            else None
        )
        not_current = Verdict.NOT_CURRENT  # read once: see states.py
        others = [r.ref for r, v in zip(results, verdicts, strict=True) if v == not_current]
        classified = self.writer.submit(job_store.classify, worker_id, others) if others else None
        self._tell(effects)  # probation revokes go out before the acks
        requeued = self._write_requeues(effects)
        stored: set[int] = set()
        failed = False
        try:
            if write is not None:
                try:
                    batch = await write
                    stamp("results-committed")
                    stored = batch.stored
                except Exception:
                    log.exception(
                        "could not store %d results from worker %s; it will send them again", len(accepted), worker_id
                    )
                    failed = True
            after = self.table.settled(accepted, stored)
        except BaseException as exc:  # cancelled (the server stops), or a bug: they may not be counted stored
            why = "the server stopped first" if isinstance(exc, asyncio.CancelledError) else f"internal error: {exc!r}"
            _not_stored(counted, why)
            raise
        if failed:
            _not_stored(counted, "their write failed")
        else:
            counted.set_result(None)
        outcomes = await classified if classified is not None else {}
        acks = result_acks(worker_id, results, verdicts, stored, outcomes, self.tally.refused)
        if stored:
            self._count_results(accepted, stored)
        link = self.links.get(worker_id)  # the worker's stream now: after a reconnect, the new one
        if link is not None and acks:
            link.send_acks(acks)
        if failed and link is not None:
            link.close()  # the worker reconnects and sends again what was not acknowledged
        elif len(stored) < len(accepted) and not failed:
            log.error("the store refused %d results the lease table accepted; recounting", len(accepted) - len(stored))
            await self._recount({s.handler_id for s in accepted if s.result.job_id not in stored})
        self._tell(after)
        if requeued is not None:
            await requeued
        self.kick()

    def _to_handlers(self, batch: job_store.StoredSettlements, counted: asyncio.Future[None]) -> None:
        """A result write ran (its commit is on its way): its succeeded results to their handlers now,
        with ``counted``, which answers once the lease table counted them stored (server/result_inbox.py)."""
        for handler_id, items in batch.succeeded.items():
            self.inbox.put(handler_id, batch.seq, items, counted)
            if self._events is not None:  # before the acks: their gRPC write is off the result's path
                self._events.wake(handler_id)

    def _count_results(self, accepted: Sequence[Settlement], stored: set[int]) -> None:
        """The metrics' view of a stored batch: results by outcome and their run times."""
        if len(stored) == len(accepted):  # the store took them all: the usual case
            results = [s.result for s in accepted]
        else:
            results = [s.result for s in accepted if s.result.job_id in stored]
        failed = sum(1 for r in results if r.error is not None)
        self.tally.results["succeeded"] += len(results) - failed
        self.tally.results["failed"] += failed
        self.tally.job_seconds.observe_many([r.duration_seconds for r in results])

    # -- timers -----------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self._apply(self.table.tick())
                if self.policy_wake.due(self.table.handlers.values()):
                    self.kick()  # a rule that reads the clock may let jobs go now (server/policy_wake.py)
                due = self.table.due_leases(self.clock.monotonic() - self.lazy_lease_seconds)
                if due:
                    self._spawn(self._write_lazy_leases(due))
                if self.clock.monotonic() - self._last_flush >= COUNTS_FLUSH_SECONDS:
                    self._last_flush = self.clock.monotonic()
                    await self._flush_worker_counts()
            except Exception:
                log.exception("timer pass failed")

    async def _flush_worker_counts(self) -> None:
        counts = self.table.take_worker_counts()
        if counts:
            await self.writer.run(catalog.add_worker_counts, counts)


def _not_stored(counted: asyncio.Future[None], why: str) -> None:
    """Tell the runtimes that took results early that those results are not stored."""
    counted.set_exception(ResultsNotStoredError(f"results handed to the handler were not stored: {why}"))
    counted.exception()  # retrieved: no runtime may have taken any
