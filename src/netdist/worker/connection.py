"""The worker's connection to the server: one ``JobService.Connect`` stream at a time.

Each stream opens with Hello (naming the leases the worker still holds) and
waits for Welcome; then a reader turns server messages into calls on a
:class:`StreamHandler` (the session), a writer sends what the session queues,
and a heartbeat reports the host's load. Protobuf stops here: the handler
hears and speaks only the values of :mod:`netdist.worker.job`.

A broken stream is logged once and retried with jittered exponential backoff
(0.2 s doubling to 5 s) forever; jobs keep running meanwhile. A connection
refused for a TLS reason is logged on every attempt, in words
(:func:`netdist.channel.tls_failure`). gRPC keepalive
pings (every 5 s, 4 s to answer) notice a silently dead peer within 10 s, on
this channel and on the server's side alike. Drain: the handler has its say,
then the worker half-closes and reconnects after the server's restart.
``close()`` half-closes for good (a stopping worker); the server then ends the
stream, or it is cut after a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc

import netdist
from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.channel import tls_failure
from netdist.errors import ProtocolError, UnauthenticatedError
from netdist.wire import (
    ITEM_OVERHEAD_BYTES,
    MAX_PROGRESS_TEXT_CHARS,
    PROGRESS_BATCH_BYTES,
    RESULT_BATCH_BYTES,
    SERVER_MAX_RECEIVE_BYTES,
    WORKER_MAX_RECEIVE_BYTES,
)
from netdist.worker.config import WorkerConfig
from netdist.worker.host import host_facts, host_load, load_credential, save_credential
from netdist.worker.job import Ack, AckOutcome, JobProgress, JobRef, JobResult, Lease

log = logging.getLogger("netdist.worker")

RESULT_BATCH_SIZE = 256
"""Results per message at most; and at most about :data:`~netdist.wire.RESULT_BATCH_BYTES` of them."""
BACKOFF_INITIAL_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
WELCOME_TIMEOUT_SECONDS = 30.0
CLOSE_SECONDS = 5.0
"""After a half-close (drain or stop), the server gets this long to end the stream."""
DEFAULT_HEARTBEAT_SECONDS = 10.0

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 4000),
    ("grpc.http2.ping_timeout_ms", 4000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
"""A ping every 5 s that must be answered within 4 s, also while no data flows
(the server allows pings 1 s apart: see server/app.py). gRPC core (1.85 as
1.66) waits ``ping_timeout_ms`` (default 1 minute) for the ack, not
``keepalive_timeout_ms``: without it a frozen peer went unnoticed for over 30 s."""

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_receive_message_length", WORKER_MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", SERVER_MAX_RECEIVE_BYTES),
    *KEEPALIVE_OPTIONS,
]
"""For the one channel that carries both the job stream and PackageService fetches."""

_ACK_OUTCOMES = {
    jobs_pb2.ACK_OUTCOME_ACCEPTED: AckOutcome.ACCEPTED,
    jobs_pb2.ACK_OUTCOME_DUPLICATE: AckOutcome.DUPLICATE,
    jobs_pb2.ACK_OUTCOME_UNKNOWN: AckOutcome.UNKNOWN,
    jobs_pb2.ACK_OUTCOME_STALE: AckOutcome.STALE,
}


class StreamHandler(Protocol):
    """What the connection tells the session, and asks of it."""

    def held(self) -> list[JobRef]:
        """The leases to name in the Hello."""
        ...

    def on_welcome(self, server_version: str) -> None: ...

    def on_leases(self, leases: list[Lease]) -> None: ...

    def on_acks(self, acks: list[Ack]) -> None: ...

    def on_revoke(self, refs: list[JobRef], reason: str) -> None: ...

    def on_drain(self, reason: str) -> None:
        """Called while the stream still takes messages; it half-closes right after."""
        ...


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


def _lease(lease: jobs_pb2.Lease) -> Lease:
    return Lease(
        ref=_ref(lease.ref),
        handler_id=lease.handler_id,
        job_name=lease.job_name,
        attempt=lease.attempt,
        script_sha256=lease.script_sha256,
        wheel_sha256s=tuple(lease.environment),
        input_json=lease.input,
        timeout_seconds=lease.timeout_seconds,
    )


def result_bytes(result: JobResult) -> int:
    """About what ``result`` takes in a batch (never less)."""
    error = result.error
    if error is None:
        return len(result.output_json or b"null") + ITEM_OVERHEAD_BYTES
    return len(error.type.encode()) + len(error.message.encode()) + len(error.traceback.encode()) + ITEM_OVERHEAD_BYTES


def result_batches(results: Sequence[JobResult]) -> Iterator[Sequence[JobResult]]:
    """``results`` in batches of at most RESULT_BATCH_SIZE and about RESULT_BATCH_BYTES (a larger one alone)."""
    start, size = 0, 0
    for end, result in enumerate(results):
        n = result_bytes(result)
        if end > start and (end - start >= RESULT_BATCH_SIZE or size + n > RESULT_BATCH_BYTES):
            yield results[start:end]
            start, size = end, 0
        size += n
    if start < len(results):
        yield results[start:]


def progress_batches(items: Iterable[JobProgress]) -> Iterator[jobs_pb2.ProgressBatch]:
    """Progress in batches of about PROGRESS_BATCH_BYTES, each text cut to what the server keeps."""
    batch = jobs_pb2.ProgressBatch()
    size = 0
    for p in items:
        text = p.text[:MAX_PROGRESS_TEXT_CHARS]
        n = 4 * len(text) + ITEM_OVERHEAD_BYTES  # UTF-8: at most 4 bytes a character
        if batch.items and size + n > PROGRESS_BATCH_BYTES:
            yield batch
            batch, size = jobs_pb2.ProgressBatch(), 0
        batch.items.append(jobs_pb2.Progress(ref=_proto_ref(p.ref), percent=p.percent, text=text))
        size += n
    if batch.items:
        yield batch


def result_batch(results: Sequence[JobResult]) -> jobs_pb2.ResultBatch:
    batch = jobs_pb2.ResultBatch()
    for result in results:
        message = batch.items.add()  # filled in place: no keyword parsing, no sub-message copies
        message.ref.job_id, message.ref.lease_no = result.ref
        message.duration_seconds = result.duration_seconds
        if result.error is not None:
            message.error.type = result.error.type
            message.error.message = result.error.message
            message.error.traceback = result.error.traceback
        else:
            message.output = result.output_json or b"null"
    return batch


@dataclasses.dataclass(slots=True, kw_only=True)
class _Stream:
    """The state that lives exactly as long as one Connect stream."""

    call: grpc.aio.StreamStreamCall
    outbox: asyncio.Queue[jobs_pb2.WorkerMessage | None] = dataclasses.field(
        default_factory=asyncio.Queue
    )
    half_closed: bool = False
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def send(self, message: jobs_pb2.WorkerMessage) -> None:
        self.outbox.put_nowait(message)

    def half_close(self) -> None:
        """No more messages: end our side once the queued ones are written."""
        if not self.half_closed:
            self.half_closed = True
            self.outbox.put_nowait(None)
            loop = asyncio.get_running_loop()
            loop.call_later(CLOSE_SECONDS, self.closed.set)


class Connection:
    """Keeps one stream to the server open, reconnecting until closed."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        worker_id: str,
        channel: grpc.aio.Channel,
        handler: StreamHandler,
        credential_path: Path | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self._channel = channel
        self._handler = handler
        self._credential_path = credential_path
        self._credential = load_credential(credential_path) if credential_path else ""
        self._stream: _Stream | None = None
        self._welcomed = False
        self._drained = False
        self._tls_failed = False  # the last attempt failed for a TLS reason
        self._closing = asyncio.Event()

    # -- sending (the session calls these) ---------------------------------------

    @property
    def ready(self) -> bool:
        """A welcomed stream takes messages (not during a drain or a close)."""
        return self._stream is not None and not self._stream.half_closed

    def send_capacity(self, jobs: int) -> None:
        self._send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=jobs)))
        log.debug("capacity %d", jobs)

    def send_results(self, results: Sequence[JobResult]) -> None:
        for batch in result_batches(results):
            self._send(jobs_pb2.WorkerMessage(results=result_batch(batch)))

    def send_started(self, refs: Iterable[JobRef]) -> None:
        started = jobs_pb2.Started(refs=[_proto_ref(ref) for ref in refs])
        self._send(jobs_pb2.WorkerMessage(started=started))

    def send_hand_back(self, refs: Iterable[JobRef], reason: str) -> None:
        hand_back = jobs_pb2.HandBack(
            refs=[_proto_ref(ref) for ref in refs], reason=reason
        )
        self._send(jobs_pb2.WorkerMessage(hand_back=hand_back))

    def send_progress(self, items: Iterable[JobProgress]) -> None:
        for batch in progress_batches(items):
            self._send(jobs_pb2.WorkerMessage(progress=batch))

    def _send(self, message: jobs_pb2.WorkerMessage) -> None:
        stream = self._stream
        if stream is not None and not stream.half_closed:
            stream.send(message)

    def close(self) -> None:
        """End for good: half-close the stream after what is queued; no reconnect."""
        self._closing.set()
        if self._stream is not None:
            self._stream.half_close()

    # -- the connection loop ---------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect with backoff, until closed (or cancelled)."""
        delays = backoff_delays()
        failing = False
        last_reason = ""
        while not self._closing.is_set():
            self._welcomed = False
            reason = await self._stream_once()
            if self._closing.is_set():
                return
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
            elif self._tls_failed:
                # Said on every attempt: a certificate problem does not go away by
                # itself, and whoever fixes it on the server wants to see each try.
                log.warning(
                    "worker %s cannot connect to %s: %s; retrying in %.1f s",
                    self.config.name,
                    self.config.target,
                    reason,
                    delay,
                )
                failing = True
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
            elif reason != last_reason:
                # A new reason (e.g. the worker was disabled) is worth a line.
                log.warning(
                    "worker %s: reconnect failed: %s; retrying",
                    self.config.name,
                    reason,
                )
            else:
                log.debug("reconnect failed: %s; next try in %.2f s", reason, delay)
            last_reason = reason
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _stream_once(self) -> str:
        """One stream from Hello to its end; returns why it ended.

        Raises UnauthenticatedError when the server refuses the token: that
        does not heal by retrying. (PERMISSION_DENIED, e.g. a disabled worker,
        is retried: an operator may enable it again.)
        """
        self._tls_failed = False
        try:
            await self._open_stream()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise UnauthenticatedError(
                    f"the server at {self.config.target} refused this worker's token: {exc.details()}"
                ) from None
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                tls = tls_failure(exc.details(), self.config.security)
                if tls is not None:
                    self._tls_failed = True
                    return tls
            return f"{exc.code().name}: {exc.details()}"
        except (
            ProtocolError,
            TimeoutError,
            grpc.aio.UsageError,
            asyncio.InvalidStateError,
        ) as exc:
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not end the connection for good
            log.exception("worker %s: error on the stream", self.config.name)
            return f"{type(exc).__name__}: {exc}"
        return "the server ended the stream"

    async def _open_stream(self) -> None:
        call = jobs_pb2_grpc.JobServiceStub(self._channel).Connect(
            metadata=self.config.security.metadata
        )
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
            if welcome.credential:  # kept before this stream says anything more
                self._keep_credential(welcome.credential)
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
            self._handler.on_welcome(welcome.server_version)
            if self._closing.is_set():
                # Closed while connecting: say what is queued, then end.
                stream.half_close()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            self._stream = None
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _keep_credential(self, credential: str) -> None:
        """The server bound a new credential to this worker's id: every later Hello presents it."""
        self._credential = credential
        if self._credential_path is not None:
            save_credential(self._credential_path, credential)
        log.info(
            "worker %s: the server issued this worker's credential (kept in %s)",
            self.config.name,
            self._credential_path or "memory",
        )

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
            held=[_proto_ref(ref) for ref in self._handler.held()],
            credential=self._credential,
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
        handler = self._handler
        async for message in messages:
            kind = message.WhichOneof("kind")
            if kind == "leases":
                handler.on_leases([_lease(lease) for lease in message.leases.items])
            elif kind == "ack":
                handler.on_acks(
                    [
                        Ack(
                            ref=_ref(item.ref),
                            outcome=_ACK_OUTCOMES.get(
                                item.outcome, AckOutcome.UNSPECIFIED
                            ),
                        )
                        for item in message.ack.items
                    ]
                )
            elif kind == "revoke":
                refs = [_ref(ref) for ref in message.revoke.refs]
                handler.on_revoke(refs, message.revoke.reason)
            elif kind == "drain":
                self._drained = True
                handler.on_drain(message.drain.reason)
                stream.half_close()
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
            if not stream.half_closed:
                stream.send(jobs_pb2.WorkerMessage(heartbeat=heartbeat))
