"""The Connect stream's messages as the worker builds and reads them: protobuf in, worker values out.

Protobuf stops here and in :mod:`netdist.worker.connection`: the session hears
and speaks only the values of :mod:`netdist.worker.job`. What the worker sends
goes in batches sized to stay far under the server's receive limit
(:mod:`netdist.wire`): results by count and bytes, progress and job log lines by bytes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence

from netdist.api.v1 import jobs_pb2
from netdist.wire import (
    ITEM_OVERHEAD_BYTES,
    JOB_LOG_BATCH_BYTES,
    MAX_JOB_LOG_LINE_CHARS,
    MAX_PROGRESS_TEXT_CHARS,
    PROGRESS_BATCH_BYTES,
    RESULT_BATCH_BYTES,
)
from netdist.worker.job import Ack, AckOutcome, JobLog, JobProgress, JobRef, JobResult, Lease

RESULT_BATCH_SIZE = 256
"""Results per message at most; and at most about :data:`~netdist.wire.RESULT_BATCH_BYTES` of them."""
ACK_OUTCOMES = {
    jobs_pb2.ACK_OUTCOME_ACCEPTED: AckOutcome.ACCEPTED,
    jobs_pb2.ACK_OUTCOME_DUPLICATE: AckOutcome.DUPLICATE,
    jobs_pb2.ACK_OUTCOME_UNKNOWN: AckOutcome.UNKNOWN,
    jobs_pb2.ACK_OUTCOME_STALE: AckOutcome.STALE,
}


def job_ref(ref: jobs_pb2.JobRef) -> JobRef:
    return JobRef(ref.job_id, ref.lease_no)


def proto_ref(ref: JobRef) -> jobs_pb2.JobRef:
    return jobs_pb2.JobRef(job_id=ref.job_id, lease_no=ref.lease_no)


def acks_from(ack: jobs_pb2.Ack) -> list[Ack]:
    """The acks an Ack holds: its accepted results, as two lists of numbers (the worker's Hello said it
    reads them; lists of different lengths pair up as far as both go), and its items."""
    accepted = AckOutcome.ACCEPTED
    # Built in C, no Python frame per job (JobRef(j, n) and Ack(...) each run a Python __new__):
    pairs = zip(ack.accepted_job_ids, ack.accepted_lease_nos, strict=False)
    refs = map(functools.partial(tuple.__new__, JobRef), pairs)
    out = list(map(functools.partial(tuple.__new__, Ack), zip(refs, itertools.repeat(accepted))))
    outcome = ACK_OUTCOMES.get
    unspecified = AckOutcome.UNSPECIFIED
    for item in ack.items:  # positional arguments, each sub-message looked up once: this runs for every job
        ref = item.ref
        out.append(Ack(JobRef(ref.job_id, ref.lease_no), outcome(item.outcome, unspecified)))
    return out


def leases_from(batch: jobs_pb2.LeaseBatch) -> list[Lease]:
    """The batch's leases: its items, then its runs (``reads_lease_runs``). An item with no handler is
    another job of the item before it, whose handler's fields it shares (the worker's Hello says it
    reads them so: ``shares_lease_fields``)."""
    out: list[Lease] = []
    shared: tuple[str, str, str, tuple[str, ...], float, str] | None = None
    for item in batch.items:  # positional, in Lease's order: this runs for every job
        if item.handler_id or shared is None:
            shared = (
                item.handler_id,
                item.job_name,
                item.script_sha256,
                tuple(item.environment),
                item.timeout_seconds,
                item.script_name,
            )
        handler_id, job_name, script_sha256, wheels, timeout, script_name = shared
        ref = item.ref
        out.append(
            Lease(
                JobRef(ref.job_id, ref.lease_no),
                handler_id,
                job_name,
                item.attempt,
                script_sha256,
                wheels,
                item.input,
                timeout,
                script_name,
            )
        )
    for run in batch.runs:
        h = run.handler
        handler_id, job_name, script_sha256 = h.handler_id, h.job_name, h.script_sha256
        wheels, timeout, script_name = tuple(h.environment), h.timeout_seconds, h.script_name
        out += [  # positional, in Lease's order: this runs for every job
            Lease(
                JobRef(job_id, lease_no),
                handler_id,
                job_name,
                attempt,
                script_sha256,
                wheels,
                text,
                timeout,
                script_name,
            )
            for job_id, lease_no, attempt, text in zip(
                run.job_ids, run.lease_nos, run.attempts, run.inputs, strict=False
            )
        ]
    return out


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
        batch.items.append(jobs_pb2.Progress(ref=proto_ref(p.ref), percent=p.percent, text=text))
        size += n
    if batch.items:
        yield batch


def log_batches(items: Iterable[JobLog]) -> Iterator[jobs_pb2.JobLogBatch]:
    """Job log lines in batches of about JOB_LOG_BATCH_BYTES (a job's lines may span batches, in order),
    each line cut to what the server keeps."""
    batch = jobs_pb2.JobLogBatch()
    size = 0
    for logged in items:
        item = batch.items.add()
        item.ref.job_id, item.ref.lease_no = logged.ref
        for at, level, whole in logged.lines:
            text = whole[:MAX_JOB_LOG_LINE_CHARS]
            n = 4 * len(text) + len(level) + ITEM_OVERHEAD_BYTES
            if size + n > JOB_LOG_BATCH_BYTES and size:
                yield batch
                batch, size = jobs_pb2.JobLogBatch(), 0
                item = batch.items.add()
                item.ref.job_id, item.ref.lease_no = logged.ref
            line = item.lines.add()
            line.at, line.level, line.text = at, level, text
            size += n
        item.dropped = logged.dropped  # with the last of its lines
        size += ITEM_OVERHEAD_BYTES
    if batch.items:
        yield batch


def result_batch(results: Sequence[JobResult], *, lists: bool = False) -> jobs_pb2.ResultBatch:
    """``results`` as one message; with ``lists`` (the server's Welcome said it reads them) and no failed
    job among them, as four lists of the jobs' fields."""
    batch = jobs_pb2.ResultBatch()
    if lists and all([result.error is None for result in results]):
        batch.job_ids.extend([result.ref.job_id for result in results])
        batch.lease_nos.extend([result.ref.lease_no for result in results])
        batch.outputs.extend([result.output_json or b"null" for result in results])
        batch.duration_seconds.extend([result.duration_seconds for result in results])
        return batch
    for result in results:
        message = batch.items.add()  # filled in place: no keyword parsing, no sub-message copies
        ref = message.ref
        ref.job_id, ref.lease_no = result.ref
        message.duration_seconds = result.duration_seconds
        if result.error is not None:
            message.error.type = result.error.type
            message.error.message = result.error.message
            message.error.traceback = result.error.traceback
        else:
            message.output = result.output_json or b"null"
    return batch
