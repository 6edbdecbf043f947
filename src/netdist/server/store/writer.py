"""Group commit: one writer owns the write connection and commits in batches, on its thread.

Async code submits an operation (a function of a Connection) and awaits its
result. The thread takes every operation waiting, runs them all in one
transaction and commits once; if that transaction fails with the operation's
own error, it runs each operation alone so that one bad operation fails only
its own caller.

A small write on the way of a job's round trip may instead run on the event
loop, when the thread has nothing queued nor running (``submit_soon``): one
batch runs at a time either way, in the order submitted.

An operation may ask for an early call (``early``): what it returned, on the loop, as soon as its
batch ran, before the COMMIT, and once (a batch run again after a failed commit does not call it
again). The result write hands its results to their handlers with it, so that a handler works while
the commit waits for the disk (server/result_inbox.py); what it hands on is not durable until the
write answers. A batch the loop ran with such an operation is committed by the thread.

Outages. When the database cannot be reached or its disk is full
(``outage.classify``), the batch is kept and tried again with backoff (0.1 s
doubling to 5 s, jittered) until it commits. Each operation says how its
caller wants an outage handled:

- ``run()``, the server's own work (leases, results, handler runtimes): waits
  through the outage and returns once its batch has committed.
- ``run_or_fail()``, an operator's call: fails at once with the outage's error
  (StoreUnavailableError, DiskFullError) instead of waiting, and is refused
  before it is queued while an outage lasts.

Nothing is applied twice. A batch is run again only when it is known not to
have committed: it failed before COMMIT (a lost connection aborts its
transaction), SQLite answered the COMMIT with an error (its commit is atomic:
an error means nothing was written), or the batch wrote nothing. When a
PostgreSQL connection is lost during COMMIT the outcome is unknown: the batch
noted its transaction id before committing, and once the database is back
``txid_status`` says whether it committed (its results are then handed out)
or not (it is run again). This matters because several operations are not
idempotent: ``jobs.record_batch`` inserts the jobs a handler created (under
ids reserved for them: run twice, it would fail on them),
``jobs.reserve_job_ids`` moves a counter, ``catalog.add_log`` and
``job_logs.append`` append log lines, ``catalog.add_worker_counts`` adds
counts: run twice, they would duplicate them. The job transitions of the lease
table (``jobs.lease``, ``jobs.store_results``,
``jobs.requeue``) are compare-and-set on (status, lease_no[, worker_id]): a
second run changes nothing, and their read-back still reports the jobs the
first run stored (it matches the timestamp the operation carries).
``jobs.store_streaks`` and the plain setters (``catalog.update_handler``,
``set_worker_disabled``, ``jobs.mark_processed``, ``worker_connected``) write
absolute values, and every read is idempotent.

The writer's health (``health``) is healthy or an outage with its kind,
reason and start. An outage is when the server's own work is held: it begins
when a batch holding such work fails for the store's reasons and ends when
that batch commits (a batch of operators' calls alone fails without changing
it, so nothing has to probe the database to end an outage). ``on_change`` is
called from the writer thread when the outage kind changes (it begins, ends,
or turns from unavailable to full).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, RootTransaction, text

from netdist.errors import StoreUnavailableError
from netdist.server.store.engine import writer_connection
from netdist.server.store.outage import Outage, StoreHealth, classify
from netdist.server.tallies import BATCH_SIZE_BUCKETS, LATENCY_SECONDS_BUCKETS, Histogram

log = logging.getLogger("netdist.store")
T = TypeVar("T")
Op = Callable[[Connection], Any]
HealthListener = Callable[[StoreHealth, StoreHealth], None]  # (before, after)
_MAX_OPS = 512
FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 5.0
_WAKE = object()  # put on the queue to end a backoff wait early
SOON_ITEMS = 16
"""A write small enough for ``submit_soon``: rows of results and new jobs its callers pass at most (a
lone job's result, a handler call with a few results and jobs). Larger ones go to the thread."""
SOON_SLOW_SECONDS = 0.005
SOON_PAUSE_SECONDS = 10.0
"""A batch the loop ran that took longer than SOON_SLOW_SECONDS (a slow disk), or failed, keeps
``submit_soon`` on the thread for SOON_PAUSE_SECONDS: the loop serves everyone meanwhile."""


@dataclasses.dataclass(slots=True)
class _Item:
    op: Op
    future: asyncio.Future[Any]
    waits: bool  # True: waits through an outage; False: fails fast
    early: Callable[[Any], None] | None = None
    """Called on the event loop with the operation's result once it ran, before its commit (once)."""
    on_error: Callable[[], None] | None = None
    """Called on the writer's thread when the item fails for good, before any item after it runs."""


@dataclasses.dataclass(slots=True)
class _Committing:
    """A batch whose operations the event loop ran: the thread commits its open transaction."""

    batch: list[_Item]
    trans: RootTransaction
    results: list[Any]
    started: float


class _BatchError(Exception):
    """A batch that did not commit (``xid`` None) or whose COMMIT outcome is unknown."""

    def __init__(self, error: Exception, *, xid: int | None = None, results: list[Any] | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.xid = xid
        self.results = results or []


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        database: str = "",
        on_change: HealthListener | None = None,
        first_delay_seconds: float = FIRST_DELAY_SECONDS,
        max_delay_seconds: float = MAX_DELAY_SECONDS,
    ) -> None:
        self._engine = engine
        self.database = database or engine.url.render_as_string(hide_password=True)
        self._on_change = on_change
        self._first_delay = first_delay_seconds
        self._max_delay = max_delay_seconds
        self._pg = engine.dialect.name == "postgresql"
        self._queue: queue.SimpleQueue[_Item | object | None] = queue.SimpleQueue()
        self._held: list[_Item] = []  # waiting items taken from the queue during an outage
        self._stopping = False  # no more waiting through outages: the server is stopping
        self._closing = False
        self._conn: Connection | None = None
        """SQLite's write connection, kept from one batch to the next (dropped after a failure). A
        PostgreSQL one goes back to the pool after each batch: the server may close an idle session,
        and the pool's check on checkout reconnects without an outage."""
        self._submitted = 0  # items put on the queue (the event loop counts)
        self._settled = 0  # items answered (the thread counts): equal, the thread has nothing
        self._soon: list[_Item] | None = None  # a batch to run on the event loop at the end of this turn
        self._soon_sealed = False  # the turn that began it is over: a later turn's submit does not join it
        self._soon_paused_until = 0.0
        self._committing: _Committing | None = None  # taken from the queue behind a batch (see _take)
        self.health = StoreHealth()
        self.commits = 0
        self.retries = 0
        self.commit_seconds = Histogram(LATENCY_SECONDS_BUCKETS)  # a batch's transaction, begin to commit
        self.commit_sizes = Histogram(BATCH_SIZE_BUCKETS)  # operations per committed batch
        self._thread = threading.Thread(target=self._run, name="netdist-store-writer", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in the next group transaction; returns after the commit.
        Waits through an outage of the store (the server's own work)."""
        return await self.submit(fn, *args, **kwargs)

    def submit(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        early: Callable[[T], None] | None = None,
        on_error: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> asyncio.Future[T]:
        """Queue ``fn(conn, *args, **kwargs)`` now, waiting through outages like ``run``:
        operations run in the order submitted, so callers that must keep an order
        (the lease table's writes) submit synchronously. Call from the event loop.

        ``early`` is called on the loop with what ``fn`` returned as soon as its batch ran, before the
        commit, once: what it hands on is not durable until the future answers (a failed commit is
        run again, and may fail for good). ``on_error`` is called on the writer's thread when the
        operation fails for good, before the thread runs anything submitted after it: a caller whose
        later writes must not commit without this one (a handler's calls) marks them so there."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Item(lambda conn: fn(conn, *args, **kwargs), future, True, early, on_error))
        return future

    def submit_soon(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        early: Callable[[T], None] | None = None,
        on_error: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> asyncio.Future[T]:
        """Like ``submit``, for a small write on the way of a job's round trip: when the writer has
        nothing queued nor running (SQLite), it runs on the event loop once this turn and the
        callbacks it scheduled have run (a lease's send to its worker goes first), with whatever else
        this turn submits (a later turn's write sends the batch to the thread first), instead of on the
        writer's thread. Waking that thread and hearing back from it cost the round trip 0.1-0.2 ms,
        and the thread's hold on the GIL slowed the loop's gRPC meanwhile; the loop waits for the
        commit instead, with nothing else to do. Under load the thread is busy and this is ``submit``.
        If the batch fails, nothing was written, and the thread runs it again the usual way (outages
        and an operation's own error alike). For writes of at most SOON_ITEMS rows.

        A batch with an ``early`` item (a result write) is committed by the thread instead, once the
        loop ran it: the loop calls ``early`` and goes on (the result to its handler) while the commit
        waits for the disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        item = _Item(lambda conn: fn(conn, *args, **kwargs), future, True, early, on_error)
        if (
            self._soon is None
            and not self._pg
            and not self._stopping
            and self._submitted == self._settled
            and time.monotonic() >= self._soon_paused_until
        ):
            self._soon = [item]
            self._soon_sealed = False
            loop.call_soon(self._seal_soon)
            loop.call_soon(loop.call_soon, self._run_soon)  # after what this turn set going, too
        else:
            self._enqueue(item)
        return future

    def _enqueue(self, item: _Item) -> None:
        if self._soon is not None:
            if not self._soon_sealed:  # the same turn: it joins the batch waiting to run on the loop
                self._soon.append(item)
                return
            self._hand_over()  # a later turn's write, of any size: the thread takes both, in order
        self._submitted += 1
        self._queue.put(item)

    def _seal_soon(self) -> None:
        self._soon_sealed = True

    def _hand_over(self) -> None:
        """The batch waiting to run on the loop goes to the thread instead (its turn to run finds none)."""
        batch, self._soon = self._soon, None
        for item in batch or ():
            self._submitted += 1
            self._queue.put(item)

    def _run_soon(self) -> None:
        batch, self._soon = self._soon, None
        if not batch:
            return  # closed meanwhile: the thread took it
        started = time.perf_counter()
        early = any(item.early is not None for item in batch)
        try:
            if early:
                trans, results = self._run_ops(batch, wait_for_lock=False)
            else:
                results = self._attempt(batch, wait_for_lock=False)
        except _BatchError:
            self._soon_paused_until = time.monotonic() + SOON_PAUSE_SECONDS
            self._soon = batch
            self._hand_over()
            return
        if time.perf_counter() - started > SOON_SLOW_SECONDS:
            self._soon_paused_until = time.monotonic() + SOON_PAUSE_SECONDS
        if early:  # the thread commits; the loop hands the results on meanwhile
            self._submitted += len(batch)
            self._queue.put(_Committing(batch, trans, results, started))
            for item, result in zip(batch, results, strict=True):
                _call_early(item, result)
            return
        self._committed(batch, started)
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def run_or_fail(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Like ``run``, but an outage fails it at once (an operator's call)."""
        outage = self.health.outage
        if outage is not None:
            raise outage.error(self.database)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Item(lambda conn: fn(conn, *args, **kwargs), future, False))
        return await future

    def stop_waiting(self) -> None:
        """From now on an outage fails every operation instead of waiting (the server is stopping)."""
        self._stopping = True
        self._queue.put(_WAKE)

    def close(self) -> None:
        self.stop_waiting()
        self._hand_over()  # the thread answers it, as it stops
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if isinstance(batch, _Committing):
                self._finish(batch)
            elif batch:
                self._commit(batch)
            if self._closing and not self._held:
                self._fail_queued()
                if self._conn is not None:
                    self._conn.close()
                return

    def _take(self) -> list[_Item] | _Committing:
        """The next batch: what is held, then what is queued; or a batch the loop ran, which comes alone
        (it is put only while the thread has nothing: nothing is queued before it)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            return committing
        batch, self._held = self._held[:_MAX_OPS], self._held[_MAX_OPS:]
        wait = not batch
        while len(batch) < _MAX_OPS and not self._closing:
            try:
                item = self._queue.get() if wait else self._queue.get_nowait()
            except queue.Empty:
                break
            wait = False
            if item is None:
                self._closing = True
            elif isinstance(item, _Committing):
                if not batch:
                    return item
                self._committing = item  # never seen: it would come right after what is taken
                break
            elif isinstance(item, _Item):
                batch.append(item)
        return batch

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Item):
                self._settle(item, error=StoreUnavailableError("the server is stopping"))

    def _commit(self, batch: list[_Item]) -> None:
        """Commit ``batch``, through outages for the items that wait."""
        delay = self._first_delay
        while batch:
            started = time.perf_counter()
            try:
                results = self._attempt(batch)
            except _BatchError as failed:
                outage = classify(failed.error)
                if outage is None:
                    self._fail_alone(batch, failed)
                    return
                if any(item.waits for item in batch):  # the server's own work is held: an outage
                    self._enter(outage)
                batch = self._after_outage(batch, failed, outage)
                if batch:
                    self.retries += 1
                    delay = self._backoff(delay)
                continue
            self._committed(batch, started)
            self._recover()
            for item, result in zip(batch, results, strict=True):
                self._settle(item, result=result)
            return

    def _finish(self, committing: _Committing) -> None:
        """Commit the transaction of a batch the loop ran; if that fails, nothing was written (SQLite):
        the batch runs again the usual way (its early calls are not made twice)."""
        try:
            committing.trans.commit()
        except Exception:
            self._drop_connection()
            self._commit(committing.batch)
            return
        self._committed(committing.batch, committing.started)
        for item, result in zip(committing.batch, committing.results, strict=True):
            self._settle(item, result=result)

    def _committed(self, batch: list[_Item], started: float) -> None:
        self.commits += 1
        self.commit_seconds.observe(time.perf_counter() - started)
        self.commit_sizes.observe(len(batch))

    def _settle(self, item: _Item, *, result: Any = None, error: BaseException | None = None) -> None:
        """Answer an item from the thread. Counted after its answer is on the loop's way, so that a
        batch the loop runs next (``submit_soon``) is answered after it."""
        if error is not None and item.on_error is not None:
            item.on_error()
        _answer(item.future, result=result, error=error)
        self._settled += 1

    def _attempt(self, batch: list[_Item], *, wait_for_lock: bool = True) -> list[Any]:
        """Run the batch in one transaction and commit it; ``_BatchError`` says how it failed.
        ``wait_for_lock=False`` (SQLite): fail at once, not after the busy timeout, if another
        process holds the write lock; the event loop must not stall on it."""
        trans, results = self._run_ops(batch, wait_for_lock=wait_for_lock)
        conn = trans.connection
        xid: int | None = None
        if self._pg:  # None when the batch wrote nothing
            try:
                xid = conn.exec_driver_sql("SELECT txid_current_if_assigned()").scalar()
            except Exception as exc:
                self._drop_connection()
                raise _BatchError(exc) from exc
        for item, result in zip(batch, results, strict=True):
            if item.early is not None:
                _answer_early(item, result)
        try:
            trans.commit()
        except Exception as exc:
            self._drop_connection()
            raise _BatchError(exc, xid=xid, results=results) from exc
        if self._pg:
            self._conn = None
            conn.close()
        return results

    def _run_ops(self, batch: list[_Item], *, wait_for_lock: bool) -> tuple[RootTransaction, list[Any]]:
        """Begin a transaction and run the batch's operations in it, uncommitted."""
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = writer_connection(self._engine)
            trans = conn.begin() if wait_for_lock else _begin_at_once(conn)
            return trans, [item.op(conn) for item in batch]
        except Exception as exc:
            self._drop_connection()
            raise _BatchError(exc) from exc

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        _discard(conn)

    def _fail_alone(self, batch: list[_Item], failed: _BatchError) -> None:
        """An operation's own error: one alone fails; several run one by one."""
        if len(batch) == 1:
            self._settle(batch[0], error=failed.error)
            return
        for item in batch:
            self._commit([item])

    def _after_outage(self, batch: list[_Item], failed: _BatchError, outage: Outage) -> list[_Item]:
        """What is left to run after an outage hit ``batch``: fail-fast items are answered now."""
        error = outage.error(self.database)
        if failed.xid is not None:  # COMMIT sent, outcome unknown: ask the database once it is back
            for item in batch:
                if not item.waits:
                    self._settle(
                        item,
                        error=type(error)(
                            f"{error.message} (the change was sent as the connection broke: "
                            "check whether it was saved once the store is back)"
                        ),
                    )
            waiting = [(item, result) for item, result in zip(batch, failed.results, strict=True) if item.waits]
            if not waiting:
                return []
            committed = self._resolve(failed.xid)
            if committed is None:  # stopping, or the database no longer knows
                for item, _ in waiting:
                    self._settle(
                        item,
                        error=StoreUnavailableError(
                            f"the store is unavailable ({outage.reason}); whether the change was saved is unknown"
                        ),
                    )
                if not self._stopping:
                    self._recover()
                return []
            if committed:
                self.commits += 1
                self._recover()
                for item, result in waiting:
                    self._settle(item, result=result)
                return []
            return [item for item, _ in waiting]
        left = []
        for item in batch:
            if item.waits and not self._stopping:
                left.append(item)
            else:
                self._settle(
                    item,
                    error=error
                    if not self._stopping
                    else StoreUnavailableError(
                        f"the store is unavailable ({outage.reason}) and the server is stopping"
                    ),
                )
        return left

    def _resolve(self, xid: int) -> bool | None:
        """Whether transaction ``xid`` committed, asked until the database answers (None: cannot tell)."""
        delay = self._first_delay
        while not self._stopping:
            try:
                with self._engine.connect() as conn:
                    status = conn.execute(text("SELECT txid_status(:xid)"), {"xid": xid}).scalar()
            except Exception as exc:
                if _beyond_restarted_database(exc):
                    log.info("a commit interrupted by the outage never reached the database's log: not committed")
                    return False
                outage = classify(exc)
                if outage is None:
                    log.error("cannot tell whether transaction %d committed", xid, exc_info=exc)
                    return None
                self._enter(outage)
                delay = self._backoff(delay)
                continue
            if status == "in progress":  # its old session has not noticed the break yet
                delay = self._backoff(delay)
                continue
            if status not in ("committed", "aborted"):
                log.error("cannot tell whether transaction %d committed (txid_status: %r)", xid, status)
                return None
            log.info("a commit interrupted by the outage was %s", status)
            return bool(status == "committed")
        return None

    def _backoff(self, delay: float) -> float:
        """Wait about ``delay`` seconds, answering fail-fast calls that come meanwhile; the next delay."""
        deadline = time.monotonic() + delay * random.uniform(0.5, 1.0)
        outage = self.health.outage
        while not self._stopping and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                self._closing = True
                self._stopping = True
            elif isinstance(item, _Item):
                if item.waits or outage is None:
                    self._held.append(item)
                else:
                    self._settle(item, error=outage.error(self.database))
        return min(delay * 2, self._max_delay)

    # -- health -------------------------------------------------------------------------

    def _enter(self, outage: Outage) -> None:
        before = self.health
        if before.outage is not None and before.outage.kind == outage.kind:
            self.health = dataclasses.replace(before, outage=outage)  # same outage, newer words
            return
        if before.outage is None:
            self.health = StoreHealth(outage=outage, since=time.time(), since_monotonic=time.monotonic())
        else:
            self.health = dataclasses.replace(before, outage=outage)
        self._notify(before)

    def _recover(self) -> None:
        before = self.health
        if before.outage is not None:
            self.health = StoreHealth()
            self._notify(before)

    def _notify(self, before: StoreHealth) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(before, self.health)
        except Exception:
            log.exception("store health listener failed")


def _begin_at_once(conn: Connection) -> RootTransaction:
    """SQLite's BEGIN IMMEDIATE with no wait for a write lock held elsewhere (it fails instead)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    patience = int(driver.execute("PRAGMA busy_timeout").fetchone()[0])
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        return conn.begin()
    finally:
        driver.execute(f"PRAGMA busy_timeout = {patience}")


def _discard(conn: Connection | None) -> None:
    """Drop a connection after a failure: its transaction is rolled back and it is not pooled again."""
    if conn is None:
        return
    try:
        conn.invalidate()
        conn.close()
    except Exception:
        log.debug("closing a failed connection failed", exc_info=True)


def _answer(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    loop = future.get_loop()

    def apply() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(apply)
    except RuntimeError:  # loop closed during shutdown
        log.debug("store result dropped: event loop closed")


def _call_early(item: _Item, result: Any) -> None:
    """Make an item's early call, on the loop, once."""
    early, item.early = item.early, None
    if early is not None and not item.future.done():
        try:
            early(result)
        except Exception:
            log.exception("a store write's early call failed")


def _answer_early(item: _Item, result: Any) -> None:
    """``_call_early`` from the thread: ahead of the item's answer, which goes after the commit."""
    try:
        item.future.get_loop().call_soon_threadsafe(_call_early, item, result)
    except RuntimeError:  # loop closed during shutdown
        log.debug("store early call dropped: event loop closed")


def _beyond_restarted_database(exc: Exception) -> bool:
    """PostgreSQL's txid_status said "transaction ID ... is in the future": the database restarted
    after a crash without the transaction in its log (a commit logged would have moved its counter
    past it), so it never committed. Asked before the writer starts anything new, the ID is not yet
    another transaction's."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "22023" and "is in the future" in str(orig)
