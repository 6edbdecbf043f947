"""A running handler instance: its host process and the loop that feeds it.

The loop hands stored results to the handler in batches, asks it for more
jobs when the queue runs low, and notices when it is finished. Each batch and
what the handler did with it (new jobs, its state) are committed together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from netdist.errors import (
    DiskFullError,
    HandlerCodeError,
    HostDiedError,
    ResultsNotStoredError,
    StoreUnavailableError,
)
from netdist.server.blobs import BlobStore
from netdist.server.dependency_locks import environments
from netdist.server.dispatcher import REFILL_BATCH, Dispatcher
from netdist.server.event_hub import HandlerSummary
from netdist.server.host import HostProcess
from netdist.server.host_protocol import (
    CallHook,
    CreateMoreJobs,
    HandlerUpdate,
    Hook,
    HostRequest,
    Initialize,
    ProcessFailures,
    ProcessResults,
    StoredFailure,
    StoredResult,
)
from netdist.server.lease_model import HandlerSpec, ReadyJob
from netdist.server.states import JobStatus
from netdist.server.store import catalog
from netdist.server.store import jobs as job_store
from netdist.server.store.writer import SOON_ITEMS, GroupCommitWriter
from netdist.stage_trace import stamp

log = logging.getLogger("netdist.server.runtime")
LOW_WATER = 5000
RESULT_BATCH = 2000
"""Results (or failures) handed to a handler in one call at most."""
FIRST_RESULT_BATCH = 1
"""The first batch after a start: nothing is known yet of how long the handler takes per result. At 16,
a handler taking 0.4 s a result made a first call of 6.4 s, and a stop then killed its host (it waits
STOP_GRACE_SECONDS); a quick handler reaches RESULT_BATCH in six calls from 1."""
RESULT_CALL_SECONDS = 0.2
"""A batch of results is sized so that its call takes about this long, from how long the handler's
code took per result in its last call, timed in its host (:func:`next_batch`, ``HandlerUpdate.seconds``):
a handler whose ``process_result`` takes 1 ms gets 200 at a time, a no-op one RESULT_BATCH. Short calls
keep a stop (which waits for the call at hand, at most STOP_GRACE_SECONDS) and the handler's commits
coming; long ones cost fewer trips per result."""
LINGER_SECONDS_PER_HANDLER = 0.0025
"""A handler's next batch of results waits this long per other running handler after its last one
(unless a full batch waits), at most MAX_LINGER_SECONDS: with many handlers, each gets its results a few
at a time, and every call of its host and every commit of what it did costs the same whatever the batch
holds. So all handlers together call their hosts about 400 times a second at most, however many run.
Alone, or after a quiet spell, a handler gets each result at once."""
MAX_LINGER_SECONDS = 0.25
MORE_WITH_RESULTS = 64
"""A batch of results this large is handed over with a call for more jobs (``_more_with_results``)."""
MAX_UNPROCESSED = 10_000
"""A handler is asked for more jobs only while fewer of its results than this wait for its
``process_result``: when workers return results faster than it takes them, its new jobs would
only pile up more results in the store (a million no-op jobs at 17,000 jobs/s left 76,000 waiting,
and the store grew with them). Its jobs then go out as fast as it processes their results."""
_MORE_CALLS_PER_TURN = 20
SAVES_IN_FLIGHT = 4
"""Calls of a handler whose work may be on its way to the store at once (``_save``). At 1, each call
waited for the commit of the one before it, and for the commit of the results it was handed: the
handler's loop waited for the disk between calls, and its workers for the jobs it had not made yet.
Against the code before, alternating 20,000 no-op job runs (bench/README.md): 1.10-1.36x on PostgreSQL,
whose commits take longer (5 of 5 pairs, median 1.19x); on SQLite inside the machine's noise (6 of 10,
median 1.01x)."""
STOP_GRACE_SECONDS = 5.0
_OPEN = (JobStatus.AVAILABLE, JobStatus.LEASED, JobStatus.SUCCEEDED, JobStatus.ERRORED)

LogSink = Callable[[str, str, str, str], None]  # handler id, level, source, message


class RunningHandler:
    def __init__(
        self,
        record: catalog.HandlerRecord,
        package: catalog.PackageRecord,
        spec: HandlerSpec,
        *,
        writer: GroupCommitWriter,
        dispatcher: Dispatcher,
        blobs: BlobStore,
        log_sink: LogSink,
        on_finished: Callable[[str], Awaitable[None]],
        on_failed: Callable[[str, str], Awaitable[None]],
        on_restart: Callable[[catalog.HandlerRecord, str], None] | None = None,
        call_timeout_seconds: float,
        new_run: bool = False,
    ) -> None:
        self.record = record
        self._new_run = new_run
        """This launch begins a run (``Handler.new_run``): told to its first host only."""
        self.package = package
        self.spec = spec
        self._writer = writer
        self._dispatcher = dispatcher
        self._blobs = blobs
        self._log_sink = log_sink
        self._on_finished = on_finished
        self._on_failed = on_failed
        self._on_restart = on_restart
        self._call_timeout_seconds = call_timeout_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._reload: catalog.PackageRecord | None = None
        self._idle_call = False  # the last create_more_jobs added nothing
        self._saved: tuple[str, str, int | None] | None = None  # state, summary and total as last committed
        self._committing: collections.deque[asyncio.Future[None]] = collections.deque()  # saves on their way
        self._saves = _SaveChain()
        self._uncounted = 0
        """Results taken from the inbox whose save has not counted them processed yet (``_after_commit``)."""
        self._host: HostProcess | None = None
        self._results_called_at = 0.0
        """When the host was last handed results from the inbox (the event loop's clock)."""
        self._batch = FIRST_RESULT_BATCH
        """Results (or failures) the next call hands over at most (:func:`next_batch`)."""
        self._moved = asyncio.Event()
        """Clear from a package upload (:meth:`reload`) until its new host came up, or the loop ended."""
        self._moved.set()
        self._up = asyncio.Event()
        """Set once its first host came up (``initialize`` and ``on_start`` ran, what they did committed), or
        once its loop ended without that: a failure is stored by then (:meth:`wait_up`)."""
        self.task: asyncio.Task[None] | None = None

    @property
    def handler_id(self) -> str:
        return self.record.id

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"handler-{self.handler_id}")

    def wake(self) -> None:
        self._wake.set()

    async def wait_up(self) -> None:
        """Return once its host came up, or its loop ended before that (failed, with the failure stored, or
        stopped): what a start answers with is then in the store. The caller bounds the wait."""
        await self._up.wait()

    async def wait_moved(self) -> None:
        """Return once a move to a new package version (:meth:`reload`) is done: its new host came up, or
        the loop ended (failed, the failure stored). The caller bounds the wait."""
        await self._moved.wait()

    def reload(self, package: catalog.PackageRecord) -> None:
        """Move to a new package version at the next safe point."""
        self._reload = package
        self._moved.clear()
        self.wake()

    async def stop(self) -> None:
        """Stop at the next safe point; a host that does not get there within
        STOP_GRACE_SECONDS (a handler hanging in its own code) is killed."""
        self._stopping = True
        self.wake()
        if self.task is None or self.task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), STOP_GRACE_SECONDS)
        except TimeoutError:
            self._log("warning", "server", f"handler host did not answer within {STOP_GRACE_SECONDS:g} s; killing it")
            if self._host is not None:
                self._host.kill()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    # -- the loop ------------------------------------------------------------------

    async def _main(self) -> None:
        try:
            await self._serve()
        except (HandlerCodeError, HostDiedError) as exc:
            detail = getattr(exc, "traceback", "")
            if detail:
                self._log("error", "server", detail.rstrip())
            await self._on_failed(self.handler_id, str(exc))
        except ResultsNotStoredError as exc:  # what the handler did with them dies with its host
            if self._stopping:
                self._log("warning", "server", f"stopped: {exc}")
            else:
                await self._on_failed(self.handler_id, f"{exc}; start it again to resume from what was stored")
        except StoreUnavailableError:
            # Only when the server stops during a store outage: the handler's state stays as
            # stored, and it resumes when the server starts again.
            self._log("warning", "server", "stopped while the store was unavailable")
        except Exception as exc:  # a bug of ours: fail the handler, keep the server
            log.exception("handler %s runtime failed", self.handler_id)
            await self._on_failed(self.handler_id, f"internal error: {exc!r}")
        finally:
            self._up.set()
            self._moved.set()
            self._dispatcher.inbox.forget(self.handler_id)
            await self._close_host()

    async def _serve(self) -> None:
        await self._start_host(self.package)
        await self._hook(Hook.ON_START)
        self._up.set()
        look = True  # read the store for results even if the lease table counts none
        while not self._stopping:
            if self._reload is not None:
                await self._swap_host(self._reload)
            progressed = await self._process(JobStatus.SUCCEEDED, look=look)
            progressed |= await self._process(JobStatus.ERRORED, look=look)
            if self._active():
                await self._create_jobs()
            if await self._is_finished():
                await self._hook(Hook.ON_FINISHED)
                await self._on_finished(self.handler_id)
                return
            look = False
            if not progressed:
                try:
                    async with asyncio.timeout(1.0):  # not wait_for: its inner task costs loop turns
                        await self._wake.wait()
                except TimeoutError:
                    look = True  # a second with nothing: the store is asked, whatever the counts say
                self._wake.clear()
        await self._hook(Hook.ON_STOP)

    async def _start_host(self, package: catalog.PackageRecord) -> None:
        paths = [await self._unpacked(sha) for sha in package.environment]
        self._host = await HostProcess.start(
            python_path=paths, on_log=lambda level, msg: self._log(level, "handler", msg)
        )
        entry = package.handlers.get(self.record.handler)
        if entry is None:
            raise HostDiedError(
                f"package {package.name} {package.version} has no handler {self.record.handler!r} "
                f"(it has: {', '.join(package.handlers) or 'none'})"
            )
        state = await self._writer.run(catalog.get_handler, self.handler_id)
        update = await self._call(
            Initialize(
                entry=entry,
                handler=self.record.handler,
                handler_id=self.handler_id,
                job_name=self.record.job_name,
                settings=json.loads(self.record.custom_json),
                state_json=state.handler_state_json,
                new_run=self._new_run,
            )
        )
        self._new_run = False  # a later host (a new version, a restart) goes on with this run
        self.package = package
        self._set_environments(package)
        self._dispatcher.update_spec(self.spec)
        self._log(
            "info", "server", f"handler host started (pid {self._host.pid}) with {package.name} {package.version}"
        )
        await self._save(update, processed=[], status=JobStatus.PROCESSED)

    def _set_environments(self, package: catalog.PackageRecord) -> None:
        envs = environments(package, self.record.deps_lock_json)
        self.spec = dataclasses.replace(
            self.spec, environment=envs[""], environments=envs, platform_locked=bool(self.record.deps_lock_json)
        )

    def set_lock(self, lock_json: str) -> None:
        """Its dependency lock changed (a platform resolved, the package's changed): new leases name its wheels."""
        self.record = dataclasses.replace(self.record, deps_lock_json=lock_json)
        self._set_environments(self.package)
        self._dispatcher.update_spec(self.spec)
        self._dispatcher.kick()

    async def _unpacked(self, sha256: str) -> Path:
        """A wheel unpacked for the host; on a full disk, wait for space (and say so once)."""
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(self._blobs.unpacked, sha256)
            except DiskFullError as exc:
                if delay == 0.5:
                    self._log("warning", "server", f"{exc.message}; waiting for space to start the handler host")
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _swap_host(self, package: catalog.PackageRecord) -> None:
        self._reload = None
        await self._hook(Hook.ON_STOP)
        await self._close_host()
        await self._start_host(package)
        if self._on_restart is not None:
            self._on_restart(self.record, "upgrade")
        await self._hook(Hook.ON_START)
        self._idle_call = False
        if self._reload is None:  # not asked to move again meanwhile
            self._moved.set()

    async def _close_host(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            await host.close()

    async def _call(self, request: HostRequest) -> HandlerUpdate:
        assert self._host is not None
        update = await self._host.call(request, timeout_seconds=self._call_timeout_seconds)
        stamp("handler-returned")
        return update

    async def _hook(self, hook: Hook) -> None:
        """Call a lifecycle hook and commit what it did (jobs it enqueued, its state)."""
        update = await self._call(CallHook(hook=hook))
        await self._save(update, processed=[], status=JobStatus.PROCESSED)
        await self._committed()  # what a hook did is in the store before what follows it (a stop, the end)

    async def _process(self, status: JobStatus, *, look: bool) -> bool:
        """Hand a batch of stored results of ``status`` to the handler: succeeded ones as the result
        write handed them over (server/result_inbox.py), else read from the store. The store is read
        only when the lease table counts some (or ``look``): a read for nothing is a trip through the
        writer, which the leases of the next job wait behind."""
        inbox = self._dispatcher.inbox
        if status == JobStatus.SUCCEEDED and not look and inbox.count(self.handler_id):
            await self._linger()
        if status == JobStatus.SUCCEEDED and not look and (taken := inbox.take(self.handler_id, self._batch)).items:
            items = taken.items
            self._results_called_at = asyncio.get_running_loop().time()
            stamp("results-taken")
            update = await self._timed(ProcessResults(items=tuple(items), more=self._more_with_results(len(items))))
            # The handler may have had them before their commit: its work is written behind it, and only
            # if they are stored (``record_batch``'s ``handed``); the lease table counts them processed
            # once they are counted stored and the save committed.
            self._uncounted += len(items)
            await self._save(
                update,
                processed=[r.job_id for r in items],
                status=JobStatus.PROCESSED,
                handed=status,
                stored=taken.stored,
            )
            self._idle_call = update.more_jobs == 0  # as in _processed
            return True
        waiting = self._dispatcher.table.counts(self.handler_id)[status]
        if status == JobStatus.SUCCEEDED:
            waiting -= self._uncounted
        if not look and waiting <= 0:
            return False
        read = await self._writer.run(job_store.unprocessed, self.handler_id, status, self._batch)
        stamp("results-taken")
        rows = read.rows
        if status == JobStatus.SUCCEEDED:
            inbox.read_store(self.handler_id, read.seq)
        if not rows:
            return False
        if status == JobStatus.SUCCEEDED:
            results = tuple(StoredResult(r.job_id, r.input_json, r.outcome_json, r.extra_json) for r in rows)
            update = await self._timed(ProcessResults(items=results, more=self._more_with_results(len(results))))
            final = JobStatus.PROCESSED
        else:
            update = await self._timed(ProcessFailures(items=tuple(_failure(r) for r in rows)))
            final = JobStatus.FAILED
        await self._save(update, processed=[r.job_id for r in rows], status=final, handed=status)
        self._processed(status, len(rows), update)
        return True

    async def _timed(self, request: ProcessResults | ProcessFailures) -> HandlerUpdate:
        """A call with a batch of results or failures; the next batch is sized from how long the
        handler's code took over it (``HandlerUpdate.seconds``), else from how long the call took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        update = await self._call(request)
        seconds = update.seconds if update.seconds is not None else loop.time() - started
        self._batch = next_batch(self._batch, len(request.items), seconds)
        return update

    def _others(self) -> int:
        """Other handlers running on this server (paused ones included)."""
        return len(self._dispatcher.table.handlers) - 1

    def _more_with_results(self, count: int) -> bool:
        """Ask for more jobs in the call that hands over ``count`` results: while other handlers run,
        where host calls are what many handlers cost, and with a batch of MORE_WITH_RESULTS or more,
        where the handler's loop is what feeds its workers (one call and one commit where two would
        go: each waits for a group commit, tens of ms under load). A few results alone (one job in
        flight) are committed first and the jobs the handler makes next in a commit of their own,
        which is the shorter way to a worker (the job's commit carries less)."""
        return (self._others() > 0 or count >= MORE_WITH_RESULTS) and self._wants_jobs()

    async def _linger(self) -> None:
        """Let results gather before the next batch, while other handlers run too (see
        LINGER_SECONDS_PER_HANDLER); not past a full batch, nor while stopping."""
        others = self._others()
        if others <= 0 or self._dispatcher.inbox.count(self.handler_id) >= self._batch:
            return
        linger = min(MAX_LINGER_SECONDS, others * LINGER_SECONDS_PER_HANDLER)
        wait = self._results_called_at + linger - asyncio.get_running_loop().time()
        if wait > 0 and not self._stopping:
            await asyncio.sleep(wait)

    def _processed(self, status: JobStatus, count: int, update: HandlerUpdate) -> None:
        self._dispatcher.table.processed(self.handler_id, was=status, count=count, invalid=len(update.invalid))
        # Results may give the handler new jobs to make: ask again, unless it was just asked with them.
        self._idle_call = update.more_jobs == 0

    def _active(self) -> bool:
        queue = self._dispatcher.table.handlers.get(self.handler_id)
        return queue is not None and queue.active

    def _wants_jobs(self) -> bool:
        """The handler is to be asked for more jobs now: running, its queue below LOW_WATER and its
        results waiting for it below MAX_UNPROCESSED."""
        counts = self._dispatcher.table.counts(self.handler_id)
        return (
            self._active()
            and counts[JobStatus.AVAILABLE] + counts[JobStatus.LEASED] < LOW_WATER
            and counts[JobStatus.SUCCEEDED] < MAX_UNPROCESSED
        )

    async def _create_jobs(self) -> None:
        for _ in range(_MORE_CALLS_PER_TURN):
            if self._idle_call or not self._wants_jobs():
                return
            update = await self._call(CreateMoreJobs())
            await self._save(update, processed=[], status=JobStatus.PROCESSED)
            if not update.jobs:
                self._idle_call = True

    async def _is_finished(self) -> bool:
        """No more jobs will come and none is open. The lease table's counts say
        when; the store confirms (a disagreement would be a bug: it is logged)."""
        if not (self._idle_call and self._active()):
            return False
        await self._committed()
        counts = self._dispatcher.table.counts(self.handler_id)
        if any(counts[s] for s in _OPEN):
            return False
        stored = await self._writer.run(job_store.tally, self.handler_id)
        if any(stored.counts.get(s, 0) for s in _OPEN):
            log.error(
                "handler %s: the lease table counts %s but the store %s; using the store",
                self.handler_id,
                dict(counts),
                stored.counts,
            )
            self._dispatcher.table.reset_counts(self.handler_id, stored.counts, stored.pruned)
            return False
        return True

    async def _save(
        self,
        update: HandlerUpdate,
        *,
        processed: list[int],
        status: JobStatus,
        handed: JobStatus | None = None,
        stored: Sequence[asyncio.Future[None]] = (),
    ) -> None:
        """Commit one call's work in one transaction: the results it processed (``handed`` to it in that
        status, their writes' answers ``stored``), its new jobs, its state (and, when the lease table's
        queue runs low, read its refill back in it). A call that changed nothing (an idle
        ``create_more_jobs``) is not written.

        The handler's next calls go while this commit is on its way, up to SAVES_IN_FLIGHT of them: the
        writer commits them in order, and once one fails none after it commits (``_SaveChain``), so the
        handler fails and restarts from the last call that was committed. A handler's loop that waited
        for each commit (a group commit, tens of ms under load) left its workers idle with every job done.

        New jobs go to the lease table as soon as their insert is queued, when its queue is caught up
        with the store (``Dispatcher.jobs_queued``): a worker may run a job while it commits. If the
        server dies first, the job never existed and its lease is refused; its id is never used again
        (server/job_ids.py)."""
        await self._committed(below=SAVES_IN_FLIGHT)
        saved = (update.state_json, update.summary, update.total)
        if not (processed or update.jobs or update.invalid) and saved == self._saved:
            return
        ids = await self._dispatcher.job_ids.take(len(update.jobs)) if update.jobs else []
        queued = self._dispatcher.may_queue_unstored(self.handler_id, update.jobs)
        if ids and not queued and self._committing:  # a refill reads the store: after the saves before it
            await self._committed()
            queued = self._dispatcher.may_queue_unstored(self.handler_id, update.jobs)
        cursor = self._dispatcher.refill_cursor(self.handler_id) if ids and not queued else None
        # A small commit with no refill to read: run by the loop itself if the writer is idle
        # (submit_soon), so a handler with one job in flight makes its next one sooner.
        small = len(processed) + len(update.jobs) <= SOON_ITEMS and cursor is None
        # A lone job's (a few jobs open): its next step waits for this commit anyway. With more open, a
        # small save (one result in when the loop came round) is not waited for: the writer's queue in
        # front of it held the handler, and its workers ran out of jobs (126 ms in one traced run).
        counts = self._dispatcher.table.counts(self.handler_id)
        alone = small and counts[JobStatus.AVAILABLE] + counts[JobStatus.LEASED] <= SOON_ITEMS
        write = (self._writer.submit_soon if small else self._writer.submit)(
            _record_call,
            self._saves,
            self.handler_id,
            processed=processed,
            processed_status=status,
            invalid=update.invalid,
            new_jobs=update.jobs,
            new_ids=ids,
            handler_state=update.state_json,
            summary=update.summary,
            total=update.total,
            refill_after=cursor,
            refill_limit=REFILL_BATCH,
            handed=handed,
            on_error=self._saves.fail,
        )
        if queued:  # no await since may_queue_unstored: its answer holds
            stamp("jobs-queued")
            self._dispatcher.jobs_queued(self.handler_id, ids, update.jobs)
        self._saved = saved
        committing = asyncio.ensure_future(
            self._after_commit(write, update, ids=ids, queued=queued, cursor=cursor, processed=processed, stored=stored)
        )
        committing.add_done_callback(_retrieved)  # a runtime cancelled meanwhile never awaits it
        self._committing.append(committing)
        if alone:
            await self._committed()

    async def _committed(self, below: int = 1) -> None:
        """Wait until fewer than ``below`` calls' saves are on their way (1: all committed), oldest first;
        raise if one failed."""
        committing = self._committing
        while committing and (len(committing) >= below or committing[0].done()):
            await committing.popleft()

    async def _after_commit(
        self,
        write: asyncio.Future[list[ReadyJob]],
        update: HandlerUpdate,
        *,
        ids: list[int],
        queued: bool,
        cursor: int | None,
        processed: list[int],
        stored: Sequence[asyncio.Future[None]],
    ) -> None:
        try:
            refill = await write
        except BaseException as exc:
            if cursor is not None:
                self._dispatcher.table.refill_failed(self.handler_id)
            if queued and write.done() and not write.cancelled():  # the insert failed (cancelled: it may not have)
                self._dispatcher.jobs_not_stored(self.handler_id, ids)
            if not isinstance(exc, asyncio.CancelledError):
                for counted in stored:  # results whose write failed: the reason this one was refused
                    await counted
            raise
        if stored:  # their write committed before this one: the lease table counts them stored
            for counted in stored:
                await counted
            self._dispatcher.table.processed(
                self.handler_id, was=JobStatus.SUCCEEDED, count=len(processed), invalid=len(update.invalid)
            )
            self._uncounted -= len(processed)
            self.wake()  # the counts are exact again: results left to the store may be read now
        if update.jobs:
            stamp("jobs-committed")
        self._dispatcher.jobs_added(self.handler_id, 0 if queued else len(ids), refill if cursor is not None else None)
        self._dispatcher.hub.handler_summary(
            HandlerSummary(handler_id=self.handler_id, total=update.total, summary=update.summary)
        )

    def _log(self, level: str, source: str, message: str) -> None:
        self._log_sink(self.handler_id, level, source, message)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Marks a commit's failure as seen: the runtime that awaits it reports it (or has ended)."""
    if not future.cancelled():
        future.exception()


def next_batch(batch: int, count: int, seconds: float) -> int:
    """The next batch's size after a call handed ``count`` items in ``seconds``: what takes about
    RESULT_CALL_SECONDS at that pace, between 1 and RESULT_BATCH, and at most four times the larger of
    ``batch`` and ``count`` (a handler that was fast on a few results may be slow on the next)."""
    if count <= 0:
        return batch
    fits = RESULT_BATCH if seconds <= 0 else int(RESULT_CALL_SECONDS * count / seconds)
    return max(1, min(RESULT_BATCH, fits, 4 * max(batch, count)))


def _failure(row: job_store.UnprocessedJob) -> StoredFailure:
    """A job that failed for good, its stored error (JSON text) read into its parts."""
    error = json.loads(row.outcome_json) or {}
    return StoredFailure(
        row.job_id,
        row.input_json,
        str(error.get("type", "")),
        str(error.get("message", "")),
        str(error.get("traceback", "")),
        row.extra_json,
        row.attempts,
    )


class _SaveChain:
    """A handler's saves in the order the writer runs them, each built on what the calls before it did:
    once one failed (``fail``, on the writer's thread, before anything after it runs), none after it may
    commit."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = False

    def fail(self) -> None:
        self.failed = True


def _record_call(conn: Connection, saves: _SaveChain, handler_id: str, **kwargs: Any) -> list[ReadyJob]:
    """``record_batch``, unless a save of the same handler before this one failed."""
    if saves.failed:
        raise RuntimeError(f"handler {handler_id}: not saved, as a call before this one was not")
    return job_store.record_batch(conn, handler_id, **kwargs)
