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
then the worker half-closes and reconnects after the server's restart. The
handler hears when a welcomed stream ends (``on_stream_end``): a stopping
worker waits for no acknowledgement once no stream can carry one.
``close()`` half-closes for good (a stopping worker); the server then ends the
stream, or it is cut after a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc

import netdist
from netdist import fields
from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.channel import tls_failure
from netdist.errors import ProtocolError, UnauthenticatedError
from netdist.platforms import this_platform
from netdist.wire import STREAM_END_KEY
from netdist.worker.config import WorkerConfig
from netdist.worker.identity import (
    host_facts,
    host_load,
    load_credential,
    save_credential,
)
from netdist.worker.job import Ack, JobLog, JobProgress, JobRef, JobResult, Lease
from netdist.worker.stream_messages import (
    acks_from,
    job_ref,
    leases_from,
    log_batches,
    progress_batches,
    proto_ref,
    result_batch,
    result_batches,
)

log = logging.getLogger("netdist.worker")

BACKOFF_INITIAL_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
WELCOME_TIMEOUT_SECONDS = 30.0
CLOSE_SECONDS = 5.0
"""After a half-close (drain or stop), the server gets this long to end the stream."""
MAX_SERVER_WORDS = 500
"""How much of what a server says as it ends a stream the worker logs (cleaned of control characters)."""
DEFAULT_HEARTBEAT_SECONDS = 10.0
MAX_HEARTBEAT_SECONDS = 3600.0
"""A longer heartbeat interval from a server is taken as this."""


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

    def on_stream_end(self) -> None:
        """A welcomed stream ended (the server ended it, or it broke): nothing more is acknowledged on it."""
        ...


def backoff_delays() -> AsyncIterator[float]:
    """0.2 s doubling to 5 s, each with +-25 % jitter (an endless async iterator for ``anext``)."""

    async def delays() -> AsyncIterator[float]:
        delay = BACKOFF_INITIAL_SECONDS
        while True:
            yield delay * random.uniform(0.75, 1.25)
            delay = min(BACKOFF_MAX_SECONDS, delay * 2)

    return delays()


@dataclasses.dataclass(slots=True, kw_only=True)
class _Stream:
    """The state that lives exactly as long as one Connect stream."""

    call: grpc.aio.StreamStreamCall
    outbox: asyncio.Queue[jobs_pb2.WorkerMessage | None] = dataclasses.field(default_factory=asyncio.Queue)
    half_closed: bool = False
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    goodbye: str | None = None
    """Why the server ended the stream, from its Goodbye (cleaned), once one came."""
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    """As the Welcome, or a later StreamSettings, said."""
    result_lists: bool = False
    """The server reads results as lists (its Welcome said so)."""

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
        stream = self._stream
        lists = stream is not None and stream.result_lists
        for batch in result_batches(results):
            self._send(jobs_pb2.WorkerMessage(results=result_batch(batch, lists=lists)))

    def send_started(self, refs: Iterable[JobRef]) -> None:
        started = jobs_pb2.Started(refs=[proto_ref(ref) for ref in refs])
        self._send(jobs_pb2.WorkerMessage(started=started))

    def send_hand_back(self, refs: Iterable[JobRef], reason: str) -> None:
        hand_back = jobs_pb2.HandBack(refs=[proto_ref(ref) for ref in refs], reason=reason)
        self._send(jobs_pb2.WorkerMessage(hand_back=hand_back))

    def send_logs(self, items: Iterable[JobLog]) -> None:
        for batch in log_batches(items):
            self._send(jobs_pb2.WorkerMessage(logs=batch))

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
        said: str | None = None
        try:
            said = await self._open_stream()
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
        return f"the server ended the stream: {said}" if said else "the server ended the stream"

    async def _open_stream(self) -> str | None:
        """Run one stream; what the server said as it ended it (its status details), if anything."""
        call = jobs_pb2_grpc.JobServiceStub(self._channel).Connect(metadata=self.config.security.metadata)
        stream = _Stream(call=call)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await call.write(jobs_pb2.WorkerMessage(hello=self._hello()))
            messages = call.__aiter__()
            async with asyncio.timeout(WELCOME_TIMEOUT_SECONDS):
                try:
                    first = await anext(messages)
                except StopAsyncIteration:
                    raise ProtocolError("the server closed the stream before its Welcome") from None
            if first.WhichOneof("kind") != "welcome":
                raise ProtocolError(f"expected Welcome, got {first.WhichOneof('kind')}")
            self._welcomed = True
            welcome = first.welcome
            if welcome.credential:  # kept before this stream says anything more
                self._keep_credential(welcome.credential)
            self._stream = stream
            stream.heartbeat_seconds = (
                server_heartbeat_seconds(welcome.heartbeat_interval_seconds) or DEFAULT_HEARTBEAT_SECONDS
            )
            stream.result_lists = welcome.reads_result_lists
            tasks = [
                asyncio.create_task(self._write_loop(stream), name="netdist-writer"),
                asyncio.create_task(self._read_loop(stream, messages), name="netdist-reader"),
                asyncio.create_task(self._heartbeat_loop(stream), name="netdist-heartbeat"),
                asyncio.create_task(stream.closed.wait(), name="netdist-closer"),
            ]
            self._handler.on_welcome(welcome.server_version)
            if self._closing.is_set():
                # Closed while connecting: say what is queued, then end.
                stream.half_close()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if stream.goodbye is None:  # else the server said why it ended the stream: that stands
                    task.result()
            if stream.goodbye is not None:
                return stream.goodbye
            if tasks[1] in done:  # the server ended the stream: its trailers have arrived
                said = dict(await call.trailing_metadata() or ()).get(STREAM_END_KEY, "")
                return fields.clean_text(str(said), MAX_SERVER_WORDS) or None
            return None
        finally:
            welcomed, self._stream = self._stream is stream, None
            for task in tasks:
                task.cancel()
            call.cancel()
            if welcomed:
                self._handler.on_stream_end()
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
            held=[proto_ref(ref) for ref in self._handler.held()],
            credential=self._credential,
            wheel_platform=jobs_pb2.WheelPlatform(**this_platform().to_json_dict()),
            shares_lease_fields=True,
            reads_accepted_refs=True,
            reads_lease_runs=True,
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
                try:
                    await stream.call.write(message)
                except asyncio.InvalidStateError:
                    # The call has ended ("RPC already finished"): the reader ends with how it
                    # ended (the server's status), which is what the operator should read.
                    await asyncio.Event().wait()
                except grpc.aio.AioRpcError:
                    # A write racing the server's end of the call fails with INTERNAL and hides the
                    # server's status (grpc/grpc#36066): let the reader take in what came before it
                    # (a Goodbye says why) and end the stream; this error only if it does not.
                    await asyncio.sleep(CLOSE_SECONDS)
                    raise

    async def _read_loop(self, stream: _Stream, messages: AsyncIterator[jobs_pb2.ServerMessage]) -> None:
        handler = self._handler
        async for message in messages:
            kind = message.WhichOneof("kind")
            if kind == "leases":
                handler.on_leases(leases_from(message.leases))
            elif kind == "ack":
                handler.on_acks(acks_from(message.ack))
            elif kind == "revoke":
                refs = [job_ref(ref) for ref in message.revoke.refs]
                handler.on_revoke(refs, message.revoke.reason)
            elif kind == "drain":
                self._drained = True
                handler.on_drain(message.drain.reason)
                stream.half_close()
            elif kind == "goodbye":
                stream.goodbye = fields.clean_text(message.goodbye.reason, MAX_SERVER_WORDS) or None
            elif kind == "settings":
                seconds = server_heartbeat_seconds(message.settings.heartbeat_interval_seconds)
                if seconds is not None and seconds != stream.heartbeat_seconds:
                    log.info(
                        "the server asks for a heartbeat every %g s (it was %g s)", seconds, stream.heartbeat_seconds
                    )
                    stream.heartbeat_seconds = seconds
            else:
                log.debug("ignoring a server message of kind %s", kind)

    async def _heartbeat_loop(self, stream: _Stream) -> None:
        while True:
            await asyncio.sleep(stream.heartbeat_seconds)
            load = host_load(self.config.cache_dir)
            heartbeat = jobs_pb2.Heartbeat(
                cpu_percent=load.cpu_percent,
                memory_percent=load.memory_percent,
                disk_free_bytes=load.disk_free_bytes,
            )
            if not stream.half_closed:
                stream.send(jobs_pb2.WorkerMessage(heartbeat=heartbeat))


def server_heartbeat_seconds(value: float) -> float | None:
    """A heartbeat interval the server sent, within bounds; None when it is no interval (0 from an old
    server, or not a positive number)."""
    if not math.isfinite(value) or value <= 0:
        return None
    return min(value, MAX_HEARTBEAT_SECONDS)
