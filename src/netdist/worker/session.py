"""One worker run: the connection, the ledger, the cache and the executor together.

Leases become jobs once their artifacts are cached. The worker asks for an
absolute capacity (:mod:`netdist.worker.capacity`) right after each Welcome and
again only when the number it wants moved; the :class:`~netdist.worker.ledger.Ledger`
keeps what it holds and what the server has yet to hear. The
:class:`~netdist.worker.outbox.Outbox` sends results, starts and progress,
batched. Results are kept until the server acknowledges them, across
reconnects, and each new stream is told again which held jobs are running.

Revoke stops jobs without a result. Drain (the server is shutting down): the
worker hands back every lease that has not started, keeps the running ones and
reconnects later. ``stop()``: capacity 0, every lease not started is handed
back at once, running jobs finish within the grace period, their results are
acknowledged, then the stream is closed. A stopping worker waits for
acknowledgements only while a stream can carry them: once its stream ended or
the server said it drains, it leaves as soon as no job runs. ``abort()`` ends
at once. Whatever is unacknowledged when the worker ends is kept on disk and
sent first by its next run (:mod:`netdist.worker.result_file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from netdist.channel import aio_channel
from netdist.errors import ArtifactError, UnauthenticatedError
from netdist.stage_trace import stamp
from netdist.worker.blob_source import PackageServiceSource
from netdist.worker.cache import ArtifactCache
from netdist.worker.capacity import wanted
from netdist.worker.channel_options import CHANNEL_OPTIONS
from netdist.worker.child_protocol import input_line
from netdist.worker.config import WorkerConfig
from netdist.worker.connection import CLOSE_SECONDS, Connection
from netdist.worker.executor import Executor
from netdist.worker.job import Ack, AckOutcome, Job, JobRef, JobResult, Lease
from netdist.worker.ledger import Ledger
from netdist.worker.outbox import Outbox
from netdist.worker.result_file import load_results, save_results
from netdist.ziplimit import ZipLimits

log = logging.getLogger("netdist.worker")

STOPPING_REASON = "worker stopping"
DRAINING_REASON = "server draining"
_STALE_NAMED = 10
"""A stale-results log line names at most this many."""
_SUBMIT_BATCH = 128
"""Leases handed to the executor at once: placed in one pass (one per lease cost a pass each), the
first at once while a child is idle (a batch of thousands takes milliseconds to prepare)."""


class WorkerSession:
    """Runs one worker until stopped."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        worker_id: str,
        credential_path: Path | None = None,
        results_path: Path | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.credential_path = credential_path
        self.results_path = results_path
        """Where results left unacknowledged wait for the next run (None: they are not kept)."""
        self.aborted = False
        self._connection: Connection | None = None
        self._cache: ArtifactCache | None = None
        self._ledger = Ledger()
        self._outbox = Outbox(self._ledger, slots=config.slots, want=self._wanted, on_nothing_held=self._check_idle)
        max_memory = config.max_job_memory_mb
        self._executor = Executor(  # reports straight to the outbox: no hop per job
            slots=config.slots,
            on_result=self._outbox.result,
            on_progress=self._outbox.progress,
            on_started=self._outbox.started,
            on_log=self._outbox.log,
            max_memory_bytes=None if max_memory is None else max_memory << 20,
            capture_output=config.capture_output,
        )
        self._fetching: dict[JobRef, asyncio.Task[None]] = {}
        self._stopping = False
        self._draining = False  # the server said it drains this stream: it acknowledges nothing more on it
        self._stop_requested = asyncio.Event()
        self._abort_requested = asyncio.Event()
        self._idle = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Finish gracefully: hand back what has not started, let running jobs finish."""
        self._stop_requested.set()

    def abort(self) -> None:
        """Stop now: kill the children."""
        self.aborted = True
        self._stop_requested.set()
        self._abort_requested.set()

    async def run(self) -> None:
        """Run until stopped; raises UnauthenticatedError when the server refuses the token."""
        self._restore_results()
        security = self.config.security
        channel = aio_channel(self.config.target, security, options=CHANNEL_OPTIONS)
        self._cache = ArtifactCache(
            self.config.cache_dir,
            PackageServiceSource(channel, metadata=security.metadata),
            limits=ZipLimits(max_unpacked_bytes=self.config.max_unpacked_bytes, max_ratio=None),
        )
        self._connection = Connection(
            self.config,
            worker_id=self.worker_id,
            channel=channel,
            handler=self,
            credential_path=self.credential_path,
        )
        self._outbox.connection = self._connection
        connecting = asyncio.create_task(self._connection.run(), name="netdist-connection")
        refused: BaseException | None = None
        try:
            stop = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait((stop, connecting), return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if connecting.done():  # the server refused the token: no use going on
                refused = None if connecting.cancelled() else connecting.exception()
            elif not self.aborted and await self._shut_down_gracefully() and self._connection.ready:
                self._connection.close()  # else no stream to end in order: the connection is cancelled
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(connecting), CLOSE_SECONDS + 1)
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, UnauthenticatedError):
                await connecting
            await self._executor.close()
            await channel.close()
            await self._cache.close()  # a held wheel's write to the cache; fetches end with the channel
            self._keep_results()
            log.info("worker %s stopped", self.config.name)
        if refused is not None:
            raise refused

    async def _shut_down_gracefully(self) -> bool:
        """True once no job runs and every result is acknowledged, or none can be (:meth:`_check_idle`);
        False when the grace ran out or on abort."""
        self._stopping = True
        refs = self._give_up_unstarted()
        self._outbox.flush()  # capacity 0 first, then what is waiting
        if refs:
            log.info("stopping: handing back %d job(s) that have not started", len(refs))
            if self._connection is not None and self._connection.ready:
                self._connection.send_hand_back(refs, STOPPING_REASON)
        self._check_idle()
        if not self._idle.is_set():
            log.info(
                "stopping: waiting up to %g s for %d running job(s) and %d unacknowledged result(s)%s",
                self.config.grace_seconds,
                self._ledger.held_count,
                self._ledger.unacked_count,
                "" if self._acks_may_come() else " (not connected: their acknowledgements are not waited for)",
            )
        idle = asyncio.create_task(self._idle.wait())
        abort = asyncio.create_task(self._abort_requested.wait())
        try:
            await asyncio.wait(
                {idle, abort},
                timeout=self.config.grace_seconds,
                return_when="FIRST_COMPLETED",
            )
        finally:
            idle.cancel()
            abort.cancel()
        if self._idle.is_set():
            return True
        if not self._abort_requested.is_set():
            log.warning(
                "grace period over: killing %d running job(s); %d result(s) unacknowledged",
                self._ledger.held_count,
                self._ledger.unacked_count,
            )
        return False

    def _check_idle(self) -> None:
        """A stopping worker may leave once no job runs and every result is acknowledged, or
        no acknowledgement can come (no stream, or the server drains it): those wait on disk."""
        ledger = self._ledger
        if self._stopping and (ledger.idle or (not ledger.held_count and not self._acks_may_come())):
            self._idle.set()

    def _acks_may_come(self) -> bool:
        """Whether the server may still acknowledge results: a welcomed stream it is not draining."""
        return self._connection is not None and self._connection.ready and not self._draining

    def _restore_results(self) -> None:
        """Results an earlier run of this worker left unacknowledged: sent first, named in each Hello."""
        if self.results_path is None:
            return
        restored = self._ledger.restore(load_results(self.results_path, self.config.target))
        if restored:
            log.info(
                "%d result(s) an earlier run left unacknowledged (kept in %s): sending them once connected",
                restored,
                self.results_path,
            )

    def _keep_results(self) -> None:
        """What the server has not acknowledged, kept for the next run (an empty file goes)."""
        if self.results_path is None:
            return
        unacked = self._ledger.unacked
        try:
            save_results(self.results_path, unacked, self.config.target)
        except OSError as exc:
            log.error(
                "cannot keep %d unacknowledged result(s) in %s: %s; their jobs will run again",
                len(unacked),
                self.results_path,
                exc.strerror or exc,
            )
            return
        if unacked:
            log.warning(
                "%d result(s) not acknowledged by the server are kept in %s: the next run sends them",
                len(unacked),
                self.results_path,
            )

    def _give_up_unstarted(self) -> list[JobRef]:
        """Forget every held lease that has not started; they are to be handed back."""
        refs = self._ledger.hand_back()
        dropped = self._executor.drop_unstarted()
        for ref in refs:
            self._outbox.drop_progress(ref)
            task = self._fetching.pop(ref, None)
            if task is not None:
                task.cancel()
        # The executor and the ledger agree on what started (on_started); should
        # they not, what the executor dropped goes back too rather than hang.
        refs += [r for r in dropped if self._ledger.holds(r) and self._ledger.revoke(r)]
        return refs

    # -- the stream (Connection calls these) ----------------------------------------

    def held(self) -> list[JobRef]:
        """The leases the Hello names: held, or answered and not yet acknowledged."""
        return self._ledger.claimed

    def on_welcome(self, server_version: str) -> None:
        log.info(
            "worker %s (id %s) connected to %s (server %s; %d slot(s), holding %d job(s), %d unacked result(s))",
            self.config.name,
            self.worker_id,
            self.config.target,
            server_version or "?",
            self.config.slots,
            self._ledger.held_count,
            self._ledger.unacked_count,
        )
        self._draining = False
        self._outbox.resend()

    def on_leases(self, leases: list[Lease]) -> None:
        stamp("lease-received")
        log.debug("%d lease(s)", len(leases))
        refused: list[JobRef] = []
        ready: list[Job] = []
        idle = self._executor.idle  # asked again after each submit, not for every lease
        for lease in leases:
            if self._stopping:  # sent before our Capacity(0) arrived
                if not self._ledger.holds(lease.ref):
                    refused.append(lease.ref)
            elif self._ledger.take(lease.ref) and (job := self._prepare(lease)) is not None:
                ready.append(job)
                if idle or len(ready) >= _SUBMIT_BATCH:
                    self._executor.submit(*ready)
                    ready.clear()
                    idle = self._executor.idle
        if ready:
            self._executor.submit(*ready)
        if refused and self._connection is not None and self._connection.ready:
            self._connection.send_hand_back(refused, STOPPING_REASON)

    def on_acks(self, acks: list[Ack]) -> None:
        log.debug("ack for %d result(s)", len(acks))
        stale: list[JobRef] = []
        stale_ = AckOutcome.STALE  # read once: a read off an enum class is slow on Python 3.11
        for ack in acks:
            self._ledger.acknowledge(ack.ref)
            if ack.outcome is stale_:
                stale.append(ack.ref)
        if stale:
            names = ", ".join(f"job {r.job_id} lease {r.lease_no}" for r in stale[:_STALE_NAMED])
            more = len(stale) - _STALE_NAMED
            log.info(
                "server dropped %d stale result(s), the lease no longer being this worker's: %s%s",
                len(stale),
                names,
                f" and {more} more" if more > 0 else "",
            )
        self._check_idle()

    def on_revoke(self, refs: list[JobRef], reason: str) -> None:
        stopped = 0
        for ref in refs:
            self._outbox.drop_progress(ref)
            if self._ledger.revoke(ref):
                stopped += 1
                task = self._fetching.pop(ref, None)
                if task is not None:
                    task.cancel()
                else:
                    self._executor.revoke(ref)
        if stopped:
            log.info("server revoked %d job(s): %s", stopped, reason or "no reason given")
        self._check_idle()

    def on_drain(self, reason: str) -> None:
        self._outbox.flush()
        refs = self._give_up_unstarted()
        log.info(
            "server is draining (%s): handing back %d job(s) not started, keeping %d running; will reconnect",
            reason or "no reason given",
            len(refs),
            self._ledger.held_count,
        )
        connection = self._connection
        if connection is not None and connection.ready:
            self._outbox.send_no_capacity()  # or the server might refill what comes back
            if refs:
                connection.send_hand_back(refs, DRAINING_REASON)
        self._draining = True  # results sent from here on are not read: they wait for the next stream
        self._check_idle()

    def on_stream_end(self) -> None:
        self._check_idle()

    # -- leases to jobs -----------------------------------------------------------------

    def _prepare(self, lease: Lease) -> Job | None:
        """The lease's job when its code is cached (the caller submits it); else None, and it is fetched
        first (or it failed)."""
        try:
            input_json = input_line(lease.input_json)
        except ValueError as exc:
            message = f"the job's input is not JSON: {exc}"
            self._outbox.result(JobResult.failed(lease.ref, "InputNotJson", message))
            return None
        assert self._cache is not None
        environment = self._cache.cached_environment(lease.script_sha256, lease.wheel_sha256s)
        if environment is not None:
            return lease.job(environment, input_json)
        self._executor.warm()  # a child boots while the environment comes
        self._fetching[lease.ref] = asyncio.create_task(
            self._fetch(lease, input_json), name=f"netdist-prepare-{lease.ref}"
        )
        return None

    async def _fetch(self, lease: Lease, input_json: bytes) -> None:
        assert self._cache is not None
        ref = lease.ref
        try:
            environment = await self._cache.environment(lease.script_sha256, lease.wheel_sha256s)
        except ArtifactError as exc:
            self._fetching.pop(ref, None)
            log.warning("job %s cannot run: %s", ref, exc.message)
            self._outbox.result(JobResult.failed(ref, "ArtifactError", exc.message))
            return
        except Exception as exc:
            self._fetching.pop(ref, None)
            message = f"cannot prepare the job's code: {type(exc).__name__}: {exc}"
            log.exception("job %s cannot run", ref)
            self._outbox.result(JobResult.failed(ref, "ArtifactError", message))
            return
        self._fetching.pop(ref, None)
        if self._ledger.holds(ref) and not self._stopping:
            self._executor.submit(lease.job(environment, input_json))

    def _wanted(self) -> int:
        """The capacity to ask for now (the outbox sends it when it moved)."""
        return wanted(
            slots=self.config.slots,
            max_prefetch=self.config.max_prefetch,
            ewma_seconds=self._executor.ewma_seconds,
            stopping=self._stopping,
        )
