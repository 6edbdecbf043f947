"""The worker's connection to the server: one ``JobService.Connect`` stream at a time.

On each stream the worker says Hello (naming the leases it still holds), waits
for Welcome, re-sends every unacknowledged result, and grants credit for
``slots + prefetch`` jobs, where prefetch is about 50 ms of work by the running
average of job durations (none before the first job finished). While more
jobs than slots are in hand or coming, credit is topped up in steps of a
quarter of the prefetch, not one message per finished job. Leases become jobs
once their artifacts are cached; results are batched (256, or 2 ms after the
first) and kept until the server acknowledges them, across reconnects.
Progress is coalesced to one batch per 0.5 s, latest value per job.

A broken stream is logged once and retried with jittered exponential backoff
(0.2 s doubling to 5 s) forever; jobs keep running meanwhile. Drain stops the
credit and ends the stream; Revoke stops jobs without a result. ``stop()``
hands back jobs that have not started, lets running ones finish within the
grace period and waits for their acknowledgements; ``abort()`` ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

import netdist
from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.worker.cache import ArtifactCache, ArtifactError, PackageServiceSource
from netdist.worker.config import WorkerConfig
from netdist.worker.executor import Executor, input_line
from netdist.worker.host import host_facts, host_load
from netdist.worker.job import Environment, Job, JobProgress, JobRef, JobResult

log = logging.getLogger("netdist.worker")

RESULT_BATCH_SIZE = 256
RESULT_FLUSH_SECONDS = 0.002
PROGRESS_FLUSH_SECONDS = 0.5
CREDIT_COALESCE_SECONDS = 0.001
CREDIT_STEP_FRACTION = (
    4  # with jobs queued beyond the slots: grant 1/4 of prefetch at once
)
PREFETCH_SECONDS = 0.05
BACKOFF_INITIAL_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
WELCOME_TIMEOUT_SECONDS = 30.0
DRAIN_CLOSE_SECONDS = 5.0
DEFAULT_HEARTBEAT_SECONDS = 10.0
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
]


class ProtocolError(Exception):
    """The server broke the stream protocol (e.g. no Welcome first)."""


def prefetch(*, slots: int, max_prefetch: int, ewma_seconds: float | None) -> int:
    """Jobs to hold beyond the slots: about 50 ms of queued work; none before a job finished."""
    if ewma_seconds is None:
        return 0
    if ewma_seconds <= 0:
        return max_prefetch
    return max(
        0, min(max_prefetch, math.floor(slots * PREFETCH_SECONDS / ewma_seconds))
    )


def backoff_delays() -> AsyncIterator[float]:
    """0.2 s doubling to 5 s, each with +-25 % jitter (an endless async iterator for ``anext``)."""

    async def delays() -> AsyncIterator[float]:
        delay = BACKOFF_INITIAL_SECONDS
        while True:
            yield delay * random.uniform(0.75, 1.25)
            delay = min(BACKOFF_MAX_SECONDS, delay * 2)

    return delays()


def _ref(ref: jobs_pb2.JobRef) -> JobRef:
    return JobRef(ref.job_id, ref.lease_no)


def _proto_ref(ref: JobRef) -> jobs_pb2.JobRef:
    return jobs_pb2.JobRef(job_id=ref.job_id, lease_no=ref.lease_no)


def _result_message(result: JobResult) -> jobs_pb2.Result:
    message = jobs_pb2.Result(
        ref=_proto_ref(result.ref), duration_seconds=result.duration_seconds
    )
    if result.error is not None:
        message.error.type = result.error.type
        message.error.message = result.error.message
        message.error.traceback = result.error.traceback
    else:
        message.output = result.output_json or b"null"
    return message


@dataclasses.dataclass(slots=True, kw_only=True)
class _Stream:
    """The state that lives exactly as long as one Connect stream."""

    call: grpc.aio.StreamStreamCall
    outbox: asyncio.Queue[jobs_pb2.WorkerMessage | None] = dataclasses.field(
        default_factory=asyncio.Queue
    )
    granted: int = 0
    """Credit granted on this stream and not yet filled by leases."""
    sent: set[JobRef] = dataclasses.field(default_factory=set)
    draining: bool = False
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def send(self, message: jobs_pb2.WorkerMessage) -> None:
        self.outbox.put_nowait(message)


class Session:
    """Runs one worker until stopped: the stream, the cache and the executor together."""

    def __init__(self, config: WorkerConfig, *, worker_id: str) -> None:
        self.config = config
        self.worker_id = worker_id
        self.aborted = False
        self._channel: grpc.aio.Channel | None = None
        self._cache: ArtifactCache | None = None
        self._executor = Executor(
            slots=config.slots, on_result=self._on_result, on_progress=self._on_progress
        )
        self._stream: _Stream | None = None
        self._held: dict[JobRef, None] = {}
        """Leases in hand: being fetched, pending or in a child (an ordered set)."""
        self._fetching: dict[JobRef, asyncio.Task[None]] = {}
        self._unacked: dict[JobRef, jobs_pb2.Result] = {}
        self._unsent: list[JobRef] = []
        self._progress: dict[JobRef, JobProgress] = {}
        self._progress_sent_at = float("-inf")
        self._result_timer: asyncio.TimerHandle | None = None
        self._progress_timer: asyncio.TimerHandle | None = None
        self._credit_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._welcomed = False
        self._drained = False
        self._stop_requested = asyncio.Event()
        self._abort_requested = asyncio.Event()
        self._idle = asyncio.Event()

    # -- life cycle ---------------------------------------------------------

    def stop(self) -> None:
        """Finish gracefully: running jobs finish (within the grace), results are acked."""
        self._stop_requested.set()

    def abort(self) -> None:
        """Stop now: kill the children."""
        self.aborted = True
        self._stop_requested.set()
        self._abort_requested.set()

    async def run(self) -> None:
        self._channel = grpc.aio.insecure_channel(
            self.config.target, options=CHANNEL_OPTIONS
        )
        self._cache = ArtifactCache(
            self.config.cache_dir, PackageServiceSource(self._channel)
        )
        connection = asyncio.create_task(
            self._connect_forever(), name="netdist-connection"
        )
        try:
            await self._stop_requested.wait()
            if not self.aborted:
                await self._shut_down_gracefully()
        finally:
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection
            await self._executor.close()
            await self._channel.close()
            log.info("worker %s stopped", self.config.name)

    async def _shut_down_gracefully(self) -> None:
        self._stopping = True
        for ref in self._executor.drop_unstarted():
            self._held.pop(ref, None)
        for ref, task in list(self._fetching.items()):
            task.cancel()
            self._held.pop(ref, None)
        self._check_idle()
        if not self._idle.is_set():
            log.info(
                "stopping: waiting up to %g s for %d running job(s) and %d unacknowledged result(s)",
                self.config.grace_seconds,
                len(self._held),
                len(self._unacked),
            )
        idle = asyncio.create_task(self._idle.wait())
        abort = asyncio.create_task(self._abort_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {idle, abort},
                timeout=self.config.grace_seconds,
                return_when="FIRST_COMPLETED",
            )
        finally:
            idle.cancel()
            abort.cancel()
        if not done:
            log.warning(
                "grace period over: killing %d running job(s); %d result(s) unacknowledged",
                len(self._held),
                len(self._unacked),
            )

    def _check_idle(self) -> None:
        if self._stopping and not self._held and not self._unacked:
            self._idle.set()

    # -- connection -------------------------------------------------------

    async def _connect_forever(self) -> None:
        delays = backoff_delays()
        failing = False
        last_reason = ""
        while True:
            self._welcomed = False
            try:
                await self._stream_once()
                reason = "the server ended the stream"
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except (
                ProtocolError,
                TimeoutError,
                grpc.aio.UsageError,
                asyncio.InvalidStateError,
            ) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug must not end the connection for good
                log.exception("worker %s: error on the stream", self.config.name)
                reason = f"{type(exc).__name__}: {exc}"
            if self._welcomed:
                delays = backoff_delays()
                failing = False
            delay = await anext(delays)
            if self._drained:
                log.info(
                    "worker %s will reconnect to %s after the drain",
                    self.config.name,
                    self.config.target,
                )
                self._drained = False
                failing = True  # the server is probably restarting: no warning for that
            elif not failing:
                verb = "lost connection to" if self._welcomed else "cannot reach"
                log.warning(
                    "worker %s %s %s: %s; reconnecting (backoff up to %g s)",
                    self.config.name,
                    verb,
                    self.config.target,
                    reason,
                    BACKOFF_MAX_SECONDS,
                )
                failing = True
            elif reason != last_reason:  # a new reason (e.g. the worker was disabled) is worth a line
                log.warning("worker %s: reconnect failed: %s; retrying", self.config.name, reason)
            else:
                log.debug("reconnect failed: %s; next try in %.2f s", reason, delay)
            last_reason = reason
            await asyncio.sleep(delay)

    async def _stream_once(self) -> None:
        """One stream from Hello to its end; sets ``_welcomed`` once the server welcomed us."""
        assert self._channel is not None
        call = jobs_pb2_grpc.JobServiceStub(self._channel).Connect()
        stream = _Stream(call=call)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await call.write(jobs_pb2.WorkerMessage(hello=self._hello()))
            messages = call.__aiter__()
            async with asyncio.timeout(WELCOME_TIMEOUT_SECONDS):
                try:
                    first = await anext(messages)
                except StopAsyncIteration:
                    raise ProtocolError(
                        "the server closed the stream before its Welcome"
                    ) from None
            if first.WhichOneof("kind") != "welcome":
                raise ProtocolError(f"expected Welcome, got {first.WhichOneof('kind')}")
            self._welcomed = True
            welcome = first.welcome
            log.info(
                "worker %s (id %s) connected to %s (server %s; %d slot(s), holding %d job(s), %d unacked result(s))",
                self.config.name,
                self.worker_id,
                self.config.target,
                welcome.server_version or "?",
                self.config.slots,
                len(self._held),
                len(self._unacked),
            )
            self._stream = stream
            interval = welcome.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
            tasks = [
                asyncio.create_task(self._write_loop(stream), name="netdist-writer"),
                asyncio.create_task(
                    self._read_loop(stream, messages), name="netdist-reader"
                ),
                asyncio.create_task(
                    self._heartbeat_loop(stream, interval), name="netdist-heartbeat"
                ),
                asyncio.create_task(stream.closed.wait(), name="netdist-closer"),
            ]
            self._unsent = list(
                self._unacked
            )  # re-send every unacknowledged result first
            self._flush_results()
            self._request_credit()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            self._stream = None
            self._unsent.clear()
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _hello(self) -> jobs_pb2.Hello:
        facts = host_facts()
        hello = jobs_pb2.Hello(
            worker_id=self.worker_id,
            name=self.config.name,
            slots=self.config.slots,
            version=netdist.__version__,
            hostname=facts.hostname,
            pid=facts.pid,
            platform=facts.platform,
            python_version=facts.python_version,
            held=[_proto_ref(ref) for ref in self._held],
        )
        hello.labels.update(self.config.labels)
        return hello

    async def _write_loop(self, stream: _Stream) -> None:
        while True:
            message = await stream.outbox.get()
            if message is None:
                await stream.call.done_writing()
                await asyncio.Event().wait()  # the reader or the closer ends the stream
            else:
                await stream.call.write(message)

    async def _read_loop(
        self, stream: _Stream, messages: AsyncIterator[jobs_pb2.ServerMessage]
    ) -> None:
        async for message in messages:
            kind = message.WhichOneof("kind")
            if kind == "leases":
                self._on_leases(stream, message.leases)
            elif kind == "ack":
                self._on_ack(message.ack)
            elif kind == "revoke":
                self._on_revoke(stream, message.revoke)
            elif kind == "drain":
                self._on_drain(stream, message.drain)
            else:
                log.debug("ignoring a server message of kind %s", kind)

    async def _heartbeat_loop(self, stream: _Stream, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            load = host_load(self.config.cache_dir)
            heartbeat = jobs_pb2.Heartbeat(
                cpu_percent=load.cpu_percent,
                memory_percent=load.memory_percent,
                disk_free_bytes=load.disk_free_bytes,
            )
            stream.send(jobs_pb2.WorkerMessage(heartbeat=heartbeat))

    # -- server messages --------------------------------------------------

    def _on_leases(self, stream: _Stream, batch: jobs_pb2.LeaseBatch) -> None:
        stream.granted = max(0, stream.granted - len(batch.items))
        log.debug("%d lease(s); %d credit unfilled", len(batch.items), stream.granted)
        for lease in batch.items:
            ref = _ref(lease.ref)
            if self._stopping or ref in self._held:
                continue  # when stopping, the lease goes back as the stream closes
            self._held[ref] = None
            try:
                input_json = input_line(lease.input)
            except ValueError as exc:
                self._on_result(
                    JobResult.failed(
                        ref, "InputNotJson", f"the job's input is not JSON: {exc}"
                    )
                )
                continue
            assert self._cache is not None
            environment = self._cache.cached_environment(
                lease.script_sha256, lease.environment
            )
            if environment is not None:
                self._executor.submit(self._job(ref, lease, environment, input_json))
            else:
                task = asyncio.create_task(
                    self._prepare(ref, lease, input_json), name=f"netdist-prepare-{ref}"
                )
                self._fetching[ref] = task
        self._request_credit()

    def _job(
        self,
        ref: JobRef,
        lease: jobs_pb2.Lease,
        environment: Environment,
        input_json: bytes,
    ) -> Job:
        return Job(
            ref=ref,
            handler_id=lease.handler_id,
            job_name=lease.job_name,
            attempt=lease.attempt,
            environment=environment,
            input_json=input_json,
            timeout_seconds=lease.timeout_seconds,
        )

    async def _prepare(
        self, ref: JobRef, lease: jobs_pb2.Lease, input_json: bytes
    ) -> None:
        assert self._cache is not None
        try:
            environment = await self._cache.environment(
                lease.script_sha256, lease.environment
            )
        except ArtifactError as exc:
            self._fetching.pop(ref, None)
            log.warning("job %s cannot run: %s", ref, exc.message)
            self._on_result(JobResult.failed(ref, "ArtifactError", exc.message))
            return
        except Exception as exc:
            self._fetching.pop(ref, None)
            message = f"cannot prepare the job's code: {type(exc).__name__}: {exc}"
            log.exception("job %s cannot run", ref)
            self._on_result(JobResult.failed(ref, "ArtifactError", message))
            return
        self._fetching.pop(ref, None)
        if ref in self._held and not self._stopping:
            self._executor.submit(self._job(ref, lease, environment, input_json))

    def _on_ack(self, ack: jobs_pb2.Ack) -> None:
        log.debug("ack for %d result(s)", len(ack.items))
        sent = self._stream.sent if self._stream is not None else set()
        for item in ack.items:
            ref = _ref(item.ref)
            self._unacked.pop(ref, None)
            sent.discard(ref)  # kept only to tell sent from unsent results
        self._check_idle()

    def _on_revoke(self, stream: _Stream, revoke: jobs_pb2.Revoke) -> None:
        stopped = 0
        for proto_ref in revoke.refs:
            ref = _ref(proto_ref)
            self._progress.pop(ref, None)
            if ref in self._held:
                del self._held[ref]
                stopped += 1
                task = self._fetching.pop(ref, None)
                if task is not None:
                    task.cancel()
                else:
                    self._executor.revoke(ref)
            elif ref in self._unacked and ref not in stream.sent:
                del self._unacked[ref]  # finished but not sent yet: drop it as told
        if stopped:
            log.info(
                "server revoked %d job(s): %s",
                stopped,
                revoke.reason or "no reason given",
            )
        self._request_credit()
        self._check_idle()

    def _on_drain(self, stream: _Stream, drain: jobs_pb2.Drain) -> None:
        log.info(
            "server is draining (%s): keeping %d running job(s), will reconnect",
            drain.reason or "no reason given",
            len(self._held),
        )
        stream.draining = True
        self._drained = True
        self._flush_results()
        stream.outbox.put_nowait(None)  # half-close once everything queued is written
        asyncio.get_running_loop().call_later(DRAIN_CLOSE_SECONDS, stream.closed.set)

    # -- results, progress, credit -------------------------------------------

    def _on_result(self, result: JobResult) -> None:
        ref = result.ref
        if ref not in self._held:
            return  # revoked meanwhile
        del self._held[ref]
        self._progress.pop(ref, None)
        self._unacked[ref] = _result_message(result)
        self._unsent.append(ref)
        if len(self._unsent) >= RESULT_BATCH_SIZE:
            self._flush_results()
        elif self._result_timer is None:
            self._result_timer = asyncio.get_running_loop().call_later(
                RESULT_FLUSH_SECONDS, self._flush_results
            )
        self._request_credit()

    def _flush_results(self) -> None:
        if self._result_timer is not None:
            self._result_timer.cancel()
            self._result_timer = None
        stream = self._stream
        if stream is None or stream.draining:
            self._unsent.clear()  # kept in _unacked; the next stream re-sends them
            return
        unsent, self._unsent = self._unsent, []
        for start in range(0, len(unsent), RESULT_BATCH_SIZE):
            refs = [
                ref
                for ref in unsent[start : start + RESULT_BATCH_SIZE]
                if ref in self._unacked
            ]
            if refs:
                batch = jobs_pb2.ResultBatch(items=[self._unacked[ref] for ref in refs])
                stream.send(jobs_pb2.WorkerMessage(results=batch))
                stream.sent.update(refs)

    def _on_progress(self, progress: JobProgress) -> None:
        if progress.ref not in self._held:
            return
        self._progress[progress.ref] = progress
        if self._progress_timer is None:
            delay = max(
                0.0, self._progress_sent_at + PROGRESS_FLUSH_SECONDS - time.monotonic()
            )
            self._progress_timer = asyncio.get_running_loop().call_later(
                delay, self._flush_progress
            )

    def _flush_progress(self) -> None:
        self._progress_timer = None
        self._progress_sent_at = time.monotonic()
        items, self._progress = self._progress, {}
        stream = self._stream
        if stream is None or stream.draining or not items:
            return
        batch = jobs_pb2.ProgressBatch(
            items=[
                jobs_pb2.Progress(ref=_proto_ref(p.ref), percent=p.percent, text=p.text)
                for p in items.values()
            ]
        )
        stream.send(jobs_pb2.WorkerMessage(progress=batch))

    def _request_credit(self) -> None:
        if self._credit_timer is None:
            self._credit_timer = asyncio.get_running_loop().call_later(
                CREDIT_COALESCE_SECONDS, self._grant_credit
            )

    def _grant_credit(self) -> None:
        self._credit_timer = None
        stream = self._stream
        if stream is None or stream.draining or self._stopping:
            return
        slots = self.config.slots
        ahead = prefetch(
            slots=slots,
            max_prefetch=self.config.max_prefetch,
            ewma_seconds=self._executor.ewma_seconds,
        )
        coming = len(self._held) + stream.granted
        missing = slots + ahead - coming
        if coming > slots and missing < ahead // CREDIT_STEP_FRACTION:
            return  # more than the slots in hand or coming: top up later, in one step
        if missing > 0:
            stream.granted += missing
            log.debug("credit +%d (holding %d)", missing, len(self._held))
            stream.send(jobs_pb2.WorkerMessage(credit=jobs_pb2.Credit(count=missing)))
