"""JobService: the worker stream. Converts protobuf to the dispatcher's values and back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence

import grpc

import netdist
from netdist import fields
from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.errors import InvalidArgumentError, NetDistError
from netdist.platforms import Platform
from netdist.server.auth import on_revoked
from netdist.server.dispatcher import Dispatcher
from netdist.server.grpc_errors import to_status
from netdist.server.job_logs import JobLogIntake
from netdist.server.lease_model import (
    AckOutcome,
    HandlerSpec,
    Lease,
    Ref,
    ResultIn,
    WorkerInfo,
)
from netdist.server.result_acks import ResultAcks
from netdist.server.store.job_logs import JobLogIn
from netdist.wire import (
    ITEM_OVERHEAD_BYTES,
    LEASE_BATCH_BYTES,
    MAX_JOB_LOG_LINE_CHARS,
    MAX_JOB_LOG_LINES,
    STREAM_END_KEY,
)

log = logging.getLogger("netdist.server.workers")
HELLO_TIMEOUT_SECONDS = 10.0
MAX_CREDENTIAL = 200
MAX_LOG_LEVEL = 10
LOG_CLOCK_SKEW_SECONDS = 300.0
"""A logged line's time may be this far ahead of the server's clock; later is taken as the server's now."""
_ACK = {
    AckOutcome.ACCEPTED: jobs_pb2.ACK_OUTCOME_ACCEPTED,
    AckOutcome.DUPLICATE: jobs_pb2.ACK_OUTCOME_DUPLICATE,
    AckOutcome.STALE: jobs_pb2.ACK_OUTCOME_STALE,
    AckOutcome.UNKNOWN: jobs_pb2.ACK_OUTCOME_UNKNOWN,
}


_templates: dict[tuple[str, str], tuple[HandlerSpec, jobs_pb2.Lease, int]] = {}
_PLATFORM_FIELD = re.compile(r"^[A-Za-z0-9_.+-]{0,40}$")


def _template(spec: HandlerSpec | None, platform_key: str = "") -> tuple[jobs_pb2.Lease, int] | None:
    """The fields every lease of a handler shares and their size, built once per spec and worker platform
    (a new spec, a new template): the environment is the wheels locked for the worker's platform."""
    if spec is None:
        return None
    key = (spec.handler_id, platform_key)
    cached = _templates.get(key)
    if cached is not None and cached[0] is spec:
        return cached[1], cached[2]
    template = jobs_pb2.Lease(
        handler_id=spec.handler_id,
        job_name=spec.job_name,
        script_sha256=spec.script_sha256,
        environment=spec.environments.get(platform_key, spec.environment),
        timeout_seconds=spec.settings.job_timeout_seconds or 0.0,
        script_name=spec.script_name,
    )
    _templates[key] = (spec, template, template.ByteSize())
    return template, template.ByteSize()


class _Run:
    """A run of one handler's leases, gathered in lists: added to a batch in a few calls, in C."""

    __slots__ = ("attempts", "ids", "inputs", "lease_nos", "template")

    def __init__(self, template: jobs_pb2.Lease) -> None:
        self.template = template
        self.ids: list[int] = []
        self.lease_nos: list[int] = []
        self.attempts: list[int] = []
        self.inputs: list[bytes] = []

    def add_to(self, batch: jobs_pb2.LeaseBatch) -> None:
        run = batch.runs.add()
        run.handler.MergeFrom(self.template)
        run.job_ids.extend(self.ids)
        run.lease_nos.extend(self.lease_nos)
        run.attempts.extend(self.attempts)
        run.inputs.extend(self.inputs)


def _lease_runs(
    leases: Sequence[Lease], specs: Mapping[str, HandlerSpec], platform_key: str
) -> Iterator[jobs_pb2.LeaseBatch]:
    """``leases`` as batches of runs of about LEASE_BATCH_BYTES (one larger lease alone); a handler that
    went away is left out (its leases are revoked with it)."""
    batch = jobs_pb2.LeaseBatch()
    size = 0
    run: _Run | None = None
    handler_id: str | None = None
    shared: tuple[jobs_pb2.Lease, int] | None = None
    for lease in leases:  # runs for every job: the template looked up again only when the handler changes
        if lease.handler_id != handler_id:
            handler_id = lease.handler_id
            shared = _template(specs.get(handler_id), platform_key)
        if shared is None:
            continue
        template, template_bytes = shared
        n = len(lease.input) + ITEM_OVERHEAD_BYTES
        if run is None or run.template is not template:
            n += template_bytes
        if size + n > LEASE_BATCH_BYTES and (run is not None or batch.runs):
            if run is not None:
                run.add_to(batch)
                run = None
            yield batch
            batch, size = jobs_pb2.LeaseBatch(), 0
            n = len(lease.input) + ITEM_OVERHEAD_BYTES + template_bytes
        if run is None or run.template is not template:
            if run is not None:
                run.add_to(batch)
            run = _Run(template)
        run.ids.append(lease.job_id)
        run.lease_nos.append(lease.lease_no)
        run.attempts.append(lease.attempt)
        run.inputs.append(lease.input)
        size += n
    if run is not None:
        run.add_to(batch)
    if batch.runs:
        yield batch


class StreamLink:
    """One worker's Connect stream: what the dispatcher sends goes through an outbox, in order."""

    def __init__(
        self,
        platform: Platform | None = None,
        *,
        shares_lease_fields: bool = False,
        reads_accepted_refs: bool = False,
        reads_lease_runs: bool = False,
    ) -> None:
        self.platform = platform
        self.platform_key = platform.key if platform is not None else ""
        self.shares_lease_fields = shares_lease_fields
        """The worker reads an item with no handler as another of the item before it (its Hello said so)."""
        self.reads_accepted_refs = reads_accepted_refs
        """The worker reads an Ack's accepted results as two lists of numbers (its Hello said so)."""
        self.reads_lease_runs = reads_lease_runs
        """The worker reads leases as runs of one handler's jobs, in lists (its Hello said so)."""
        self.outbox: asyncio.Queue[jobs_pb2.ServerMessage | None] = asyncio.Queue()
        self._closed = False
        self.close_reason = ""  # told to the worker as the stream ends (STREAM_END_KEY)

    @property
    def closed(self) -> bool:
        return self._closed

    def _put(self, message: jobs_pb2.ServerMessage) -> None:
        if not self._closed:
            self.outbox.put_nowait(message)

    def send_leases(self, leases: Sequence[Lease], specs: Mapping[str, HandlerSpec]) -> None:
        """Leases in batches of about LEASE_BATCH_BYTES (one larger lease alone), far under the worker's limit."""
        if self.reads_lease_runs:
            for runs in _lease_runs(leases, specs, self.platform_key):
                self._put(jobs_pb2.ServerMessage(leases=runs))
            return
        batch = jobs_pb2.LeaseBatch()
        size = 0
        last: jobs_pb2.Lease | None = None  # the template of the batch's last item, to a worker that shares
        for lease in leases:
            shared = _template(specs.get(lease.handler_id), self.platform_key)
            if shared is None:
                continue  # the handler went away; its lease is revoked with it
            template, template_bytes = shared
            n = template_bytes + len(lease.input) + ITEM_OVERHEAD_BYTES
            if size + n > LEASE_BATCH_BYTES and batch.items:
                self._put(jobs_pb2.ServerMessage(leases=batch))
                batch, size, last = jobs_pb2.LeaseBatch(), 0, None
            size += n
            item = batch.items.add()
            if template is not last:
                item.MergeFrom(template)  # the handler's fields, copied in C: half the cost of building them
                if self.shares_lease_fields:
                    last = template
            ref = item.ref
            ref.job_id = lease.job_id
            ref.lease_no = lease.lease_no
            item.attempt = lease.attempt
            item.input = lease.input
        if batch.items:
            self._put(jobs_pb2.ServerMessage(leases=batch))

    def send_acks(self, acks: ResultAcks) -> None:
        ack = jobs_pb2.Ack()
        add = ack.items.add
        items = acks.ordered or []
        if self.reads_accepted_refs:  # the accepted as two packed lists, built in C
            ack.accepted_job_ids.extend([r.job_id for r in acks.accepted])
            ack.accepted_lease_nos.extend([r.lease_no for r in acks.accepted])
            items = [x for x in items if x[1] is not AckOutcome.ACCEPTED]
        elif acks.ordered is None:
            items = [(r.ref, AckOutcome.ACCEPTED) for r in acks.accepted]
        for (job_id, lease_no), outcome in items:
            ref = add(outcome=_ACK[outcome]).ref  # each sub-message looked up once: this runs for every job
            ref.job_id = job_id
            ref.lease_no = lease_no
        self._put(jobs_pb2.ServerMessage(ack=ack))

    def send_revoke(self, refs: Sequence[Ref], reason: str) -> None:
        self._put(
            jobs_pb2.ServerMessage(
                revoke=jobs_pb2.Revoke(refs=[jobs_pb2.JobRef(job_id=j, lease_no=n) for j, n in refs], reason=reason)
            )
        )

    def send_drain(self, reason: str) -> None:
        self._put(jobs_pb2.ServerMessage(drain=jobs_pb2.Drain(reason=reason)))

    def send_heartbeat_interval(self, seconds: float) -> None:
        self._put(jobs_pb2.ServerMessage(settings=jobs_pb2.StreamSettings(heartbeat_interval_seconds=seconds)))

    def close(self, reason: str = "") -> None:
        if not self._closed:
            self._closed = True
            self.close_reason = reason
            self.outbox.put_nowait(None)


class JobService(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, dispatcher: Dispatcher, *, on_platform: Callable[[Platform], None] | None = None) -> None:
        self.dispatcher = dispatcher
        self.job_logs = JobLogIntake(dispatcher.table, dispatcher.writer, clock=dispatcher.clock)
        self.on_platform = on_platform  # a worker of this platform connected (its locks may need resolving)

    @to_status
    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[jobs_pb2.WorkerMessage], context: grpc.aio.ServicerContext
    ) -> None:
        requests = aiter(request_iterator)
        hello = await _check_hello(requests)
        try:
            platform = _platform(hello)
            info = _worker_info(hello, platform)
            link = StreamLink(
                platform,
                shares_lease_fields=hello.shares_lease_fields,
                reads_accepted_refs=hello.reads_accepted_refs,
                reads_lease_runs=hello.reads_lease_runs,
            )
            issued = await self.dispatcher.connect(
                link,
                info,
                [(r.job_id, r.lease_no) for r in hello.held],
                hostname=hello.hostname,
                version=fields.clean_text(hello.version, fields.MAX_VERSION),
                credential=hello.credential,
                platform_json=json.dumps(link.platform.to_json_dict(), sort_keys=True) if link.platform else "",
            )
        except NetDistError as exc:
            log.warning("refused a worker stream from %s: %s", context.peer(), exc.message)
            raise
        on_revoked(context, link.close)  # its token revoked: the stream ends in order
        if link.platform is not None and self.on_platform is not None:
            self.on_platform(link.platform)
        log.info(
            "worker %s (%s) connected from %s with %d slot%s%s",
            info.name,
            info.worker_id,
            context.peer(),
            info.slots,
            "" if info.slots == 1 else "s",
            "; issued its credential" if issued else "",
        )
        await context.write(
            jobs_pb2.ServerMessage(
                welcome=jobs_pb2.Welcome(
                    worker_id=info.worker_id,
                    heartbeat_interval_seconds=self.dispatcher.heartbeat_interval(info.worker_id),
                    server_version=netdist.__version__,
                    credential=issued or "",
                    reads_result_lists=True,
                )
            )
        )
        if issued is not None:  # its first message after this Welcome shows the worker has its credential
            requests = _noting_first(
                requests, functools.partial(self.dispatcher.credential_received, info.worker_id, issued)
            )
        reader = asyncio.create_task(self._read(requests, info.worker_id, link))
        try:
            while (message := await link.outbox.get()) is not None:
                await context.write(message)
            if link.close_reason:  # said first in a message: a worker's write racing the end can hide the status
                await context.write(jobs_pb2.ServerMessage(goodbye=jobs_pb2.Goodbye(reason=link.close_reason)))
                context.set_trailing_metadata(((STREAM_END_KEY, link.close_reason),))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self.dispatcher.disconnect(info.worker_id, link)
            log.info("worker %s (%s) disconnected", info.name, info.worker_id)

    async def _read(self, requests: AsyncIterator[jobs_pb2.WorkerMessage], worker_id: str, link: StreamLink) -> None:
        d = self.dispatcher
        pending: set[asyncio.Task[None]] = set()
        try:
            async for message in requests:
                if link.closed:
                    break
                kind = message.WhichOneof("kind")
                if kind == "results":
                    task = asyncio.create_task(d.on_results(worker_id, results_from(message.results)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    task.add_done_callback(lambda t: _log_failure(t, worker_id, link))
                elif kind == "capacity":
                    d.set_capacity(worker_id, message.capacity.jobs)
                elif kind == "started":
                    d.started(worker_id, [(r.job_id, r.lease_no) for r in message.started.refs])
                else:
                    self._take(worker_id, kind, message)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        except grpc.aio.AioRpcError:
            pass
        except Exception:
            log.exception("worker %s stream failed", worker_id)
        finally:
            link.close()

    def _take(self, worker_id: str, kind: str | None, message: jobs_pb2.WorkerMessage) -> None:
        """The messages that are not about a job's lease or its result: hand-backs, progress, logs, heartbeats."""
        d = self.dispatcher
        if kind == "hand_back":
            d.hand_back(
                worker_id,
                [(r.job_id, r.lease_no) for r in message.hand_back.refs],
                fields.clean_text(message.hand_back.reason, fields.MAX_REASON),
            )
        elif kind == "progress":
            d.progress(
                worker_id,
                [
                    ((p.ref.job_id, p.ref.lease_no), p.percent, fields.clean_text(p.text, fields.MAX_PROGRESS_TEXT))
                    for p in message.progress.items
                ],
            )
        elif kind == "logs":
            self.job_logs.take(worker_id, _job_logs(message.logs.items, d.clock.time()))
        elif kind == "heartbeat":
            d.heartbeat(worker_id)
        else:
            log.warning("worker %s sent an unexpected %s message; ignored", worker_id, kind)


async def _check_hello(requests: AsyncIterator[jobs_pb2.WorkerMessage]) -> jobs_pb2.Hello:
    """The Hello a worker stream starts with; InvalidArgumentError when it starts with anything else,
    ends, or says nothing for HELLO_TIMEOUT_SECONDS."""
    try:
        first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT_SECONDS)
    except (TimeoutError, StopAsyncIteration):
        first = None
    if first is None or not first.HasField("hello"):
        raise InvalidArgumentError("a worker stream must start with Hello")
    return first.hello


async def _noting_first(
    requests: AsyncIterator[jobs_pb2.WorkerMessage], on_first: Callable[[], None]
) -> AsyncIterator[jobs_pb2.WorkerMessage]:
    first = True
    async for message in requests:
        if first:
            on_first()
            first = False
        yield message


def results_from(batch: jobs_pb2.ResultBatch) -> list[ResultIn]:
    """The batch's results: its lists (jobs that succeeded), then its items."""
    out = [
        ResultIn(job_id, lease_no, output.decode("utf-8", "replace"), None, seconds)
        for job_id, lease_no, output, seconds in zip(
            batch.job_ids, batch.lease_nos, batch.outputs, batch.duration_seconds, strict=False
        )
    ]
    for r in batch.items:  # each field read once, positional arguments: this runs for every job
        ref = r.ref
        if r.HasField("error"):
            out.append(ResultIn(ref.job_id, ref.lease_no, None, _error(r.error), r.duration_seconds))
        else:
            out.append(
                ResultIn(ref.job_id, ref.lease_no, r.output.decode("utf-8", "replace"), None, r.duration_seconds)
            )
    return out


def _job_logs(items: Sequence[jobs_pb2.JobLog], now: float) -> list[JobLogIn]:
    """What a worker's jobs logged, cleaned: each line cut, its level one short word, its time sane.
    The text keeps its lines (a traceback); the CLI shows it safely."""
    latest = now + LOG_CLOCK_SKEW_SECONDS
    return [
        JobLogIn(
            job_id=item.ref.job_id,
            lease_no=item.ref.lease_no,
            lines=[
                (
                    line.at if math.isfinite(line.at) and 0 < line.at <= latest else now,
                    fields.clean_text(line.level, MAX_LOG_LEVEL).upper() or "INFO",
                    line.text[:MAX_JOB_LOG_LINE_CHARS].replace("\x00", "\ufffd"),
                )
                for line in item.lines[:MAX_JOB_LOG_LINES]
            ],
            dropped=min(max(item.dropped, 0), 1 << 40) + max(0, len(item.lines) - MAX_JOB_LOG_LINES),
        )
        for item in items
    ]


def _log_failure(task: asyncio.Task[None], worker_id: str, link: StreamLink) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("results from worker %s failed; it will send them again", worker_id, exc_info=task.exception())
        link.close()  # the worker reconnects and re-sends what was not acknowledged


def _error(error: jobs_pb2.JobError) -> dict[str, str]:
    """A failed job's error, clipped; its message and traceback keep their lines (the CLI shows them safely)."""
    return {
        "type": fields.clean_text(error.type, fields.MAX_ERROR_TYPE),
        "message": error.message[: fields.MAX_ERROR_MESSAGE],
        "traceback": error.traceback[: fields.MAX_TRACEBACK],
    }


def _worker_info(hello: jobs_pb2.Hello, platform: Platform | None = None) -> WorkerInfo:
    """The worker a Hello describes; InvalidArgumentError naming the field when an identifier is too long,
    empty where it may not be, or holds a control character. Nothing is stored before this passed."""
    fields.check_identifier("Hello.worker_id", hello.worker_id, fields.MAX_WORKER_ID, empty_ok=False)
    if hello.slots < 1 or hello.slots > 4096:
        raise InvalidArgumentError(f"Hello.slots must be between 1 and 4096, got {hello.slots}")
    fields.check_identifier("Hello.name", hello.name, fields.MAX_NAME)
    fields.check_identifier("Hello.hostname", hello.hostname, fields.MAX_HOSTNAME)
    if len(hello.labels) > fields.MAX_LABELS:
        raise InvalidArgumentError(f"Hello.labels holds {len(hello.labels)} labels; at most {fields.MAX_LABELS}")
    for key, value in hello.labels.items():
        fields.check_identifier("Hello.labels key", key, fields.MAX_LABEL_KEY, empty_ok=False)
        fields.check_identifier(f"Hello.labels[{key!r}]", value, fields.MAX_LABEL_VALUE)
    if len(hello.credential) > MAX_CREDENTIAL:
        raise InvalidArgumentError(f"Hello.credential is longer than {MAX_CREDENTIAL} characters")
    name = hello.name or hello.hostname or hello.worker_id[:8]
    return WorkerInfo(
        worker_id=hello.worker_id,
        name=name,
        labels=dict(hello.labels),
        slots=hello.slots,
        platform=platform.key if platform is not None else "",
    )


def _platform(hello: jobs_pb2.Hello) -> Platform | None:
    """The wheel platform a Hello reports; None when it reports none (an older worker).
    InvalidArgumentError naming the field when one is too long or holds other than [A-Za-z0-9_.+-]."""
    if not hello.HasField("wheel_platform"):
        return None
    p = hello.wheel_platform
    values = {f: getattr(p, f) for f in ("implementation", "python", "os", "machine", "os_version")}
    for name, value in values.items():
        if not _PLATFORM_FIELD.match(value):
            raise InvalidArgumentError(f"Hello.wheel_platform.{name} must be up to 40 of [A-Za-z0-9_.+-]")
    if not all(values[f] for f in ("implementation", "python", "os", "machine")):
        return None
    return Platform(**values)
