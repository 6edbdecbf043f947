"""No message either side builds passes the receive limit of the other; a too-large output fails its job."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdist.api.v1 import jobs_pb2
from netdist.jobscript import JobSettings
from netdist.server.job_service import StreamLink
from netdist.server.lease_model import HandlerSpec, Lease
from netdist.wire import (
    LEASE_BATCH_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_TRACEBACK_CHARS,
    PROGRESS_BATCH_BYTES,
    RESULT_BATCH_BYTES,
    SERVER_MAX_RECEIVE_BYTES,
    WORKER_MAX_RECEIVE_BYTES,
)
from netdist.worker.job import JobProgress, JobRef, JobResult
from netdist.worker.outbox import fitting
from netdist.worker.stream_messages import (
    RESULT_BATCH_SIZE,
    leases_from,
    progress_batches,
    result_batch,
    result_batches,
)

KIB, MIB = 1024, 1024 * 1024


def output(ref: int, size: int) -> JobResult:
    return JobResult(
        ref=JobRef(ref, 2**40 + ref), output_json=b'"' + b"x" * max(0, size - 2) + b'"', duration_seconds=1.5
    )


def failure(ref: int, chars: int) -> JobResult:
    return JobResult.failed(JobRef(ref, 1), "E" * 200, "é" * chars, traceback="🐍" * chars)


sizes = st.lists(st.one_of(st.integers(0, 2 * KIB), st.integers(0, 900 * KIB), st.just(MAX_OUTPUT_BYTES)), max_size=400)


@settings(max_examples=60, deadline=None)
@given(sizes, st.booleans())
def test_result_batches_fit_the_servers_limit_in_order(outputs: list[int], lists: bool) -> None:
    results = [fitting(output(i, n)) for i, n in enumerate(outputs)]
    batches = list(result_batches(results))
    assert [r for b in batches for r in b] == results
    for batch in batches:
        message = jobs_pb2.WorkerMessage(results=result_batch(batch, lists=lists))
        assert message.ByteSize() <= SERVER_MAX_RECEIVE_BYTES
        assert len(batch) <= RESULT_BATCH_SIZE
        assert len(batch) == 1 or message.ByteSize() <= RESULT_BATCH_BYTES + 1024


def test_a_thousand_small_results_still_go_256_at_a_time() -> None:
    batches = list(result_batches([output(i, 10) for i in range(1000)]))
    assert [len(b) for b in batches] == [256, 256, 256, 232]


def test_an_output_over_the_limit_fails_its_job_with_a_clear_error() -> None:
    big = output(7, MAX_OUTPUT_BYTES + 1)
    result = fitting(big)
    assert result.output_json is None and result.error is not None
    assert result.ref == big.ref and result.duration_seconds == 1.5
    assert result.error.type == "OutputTooLarge"
    assert result.error.message == (
        f"the job's output is {MAX_OUTPUT_BYTES + 1} bytes of JSON, the limit is {MAX_OUTPUT_BYTES}"
    )
    exact = output(8, MAX_OUTPUT_BYTES)
    assert fitting(exact) is exact
    message = jobs_pb2.WorkerMessage(results=result_batch([exact]))
    assert message.ByteSize() <= SERVER_MAX_RECEIVE_BYTES


def test_a_failures_texts_are_cut_to_fit() -> None:
    huge = failure(1, 2 * MIB)
    result = fitting(huge)
    assert result.error is not None
    assert result.error.message == "é" * 16 * KIB
    assert result.error.traceback.startswith(f"[{2 * MIB - MAX_TRACEBACK_CHARS} characters cut]\n🐍")
    assert len(result.error.traceback) < MAX_TRACEBACK_CHARS + 100
    batches = list(result_batches([result] * 40))
    for batch in batches:
        assert jobs_pb2.WorkerMessage(results=result_batch(batch)).ByteSize() <= RESULT_BATCH_BYTES + 1024
    assert fitting(failure(2, 10)) == failure(2, 10)


def test_progress_batches_are_cut_by_bytes_and_texts_to_what_the_server_keeps() -> None:
    items = [JobProgress(ref=JobRef(i, 1), percent=50.0, text="🐍" * 10_000) for i in range(2000)]
    batches = list(progress_batches(items))
    assert sum(len(b.items) for b in batches) == 2000 and len(batches) > 1
    assert all(len(p.text) == 500 for b in batches for p in b.items)
    assert all(jobs_pb2.WorkerMessage(progress=b).ByteSize() <= PROGRESS_BATCH_BYTES for b in batches)


def spec(handler_id: str) -> HandlerSpec:
    return HandlerSpec(
        handler_id=handler_id,
        job_name="j" * 200,
        settings=JobSettings(package="p", handler="h", job="j", job_timeout_seconds=30.0),
        script_sha256="s" * 64,
        environment=("w" * 64,) * 20,
    )


def lease(job_id: int, handler_id: str, size: int) -> Lease:
    return Lease(
        job_id=job_id,
        lease_no=2**40,
        handler_id=handler_id,
        worker_id="w",
        attempt=1,
        input=b"[" + b"1," * (size // 2) + b"1]",
        leased_at=0.0,
        leased_mono=0.0,
    )


@pytest.mark.parametrize("runs", [False, True], ids=["items", "runs"])
@pytest.mark.parametrize("input_bytes", [10, 100 * KIB, 700 * KIB, MAX_OUTPUT_BYTES])
def test_lease_batches_are_split_by_bytes(input_bytes: int, runs: bool) -> None:
    specs = {"a": spec("a"), "b": spec("b")}
    count = 300 if input_bytes < MIB else 5
    leases = [lease(i, "ab"[i % 2], input_bytes) for i in range(count)]
    link = StreamLink(reads_lease_runs=runs)
    link.send_leases(leases, specs)
    messages = []
    while not link.outbox.empty():
        message = link.outbox.get_nowait()
        assert message is not None
        messages.append(message)
    assert [x.ref.job_id for m in messages for x in leases_from(m.leases)] == list(range(count))
    for message in messages:
        size = message.ByteSize()
        assert size <= WORKER_MAX_RECEIVE_BYTES and size <= 4 * MIB
        assert len(leases_from(message.leases)) == 1 or size <= LEASE_BATCH_BYTES
    if input_bytes == 10:
        assert len(messages) == 1  # small leases still travel together


def sent(link: StreamLink) -> list[jobs_pb2.ServerMessage]:
    messages = []
    while not link.outbox.empty():
        message = link.outbox.get_nowait()
        assert message is not None
        messages.append(message)
    return messages


def test_a_worker_that_shares_lease_fields_gets_each_handlers_fields_once_per_run_and_reads_the_same_leases() -> None:
    """Seen from outside: every lease of a batch carried its handler's fields (job name, script hash,
    the wheels' hashes): about 220 bytes a no-op lease, 24 of them its own. To a worker whose Hello
    says it shares them, only the first lease of each run of one handler carries them."""
    specs = {"a": spec("a"), "b": spec("b")}
    leases = [lease(i, handler, 10) for i, handler in enumerate("aaabba")]
    full, shared = StreamLink(), StreamLink(shares_lease_fields=True)
    full.send_leases(leases, specs)
    shared.send_leases(leases, specs)
    (whole,), (compact,) = sent(full), sent(shared)
    assert [item.handler_id for item in whole.leases.items] == list("aaabba")
    assert [item.handler_id for item in compact.leases.items] == ["a", "", "", "b", "", "a"]
    assert compact.ByteSize() < 0.55 * whole.ByteSize()  # three items of six carry them
    assert leases_from(compact.leases) == leases_from(whole.leases)
    assert [x.ref.job_id for x in leases_from(compact.leases)] == list(range(6))


def test_a_batch_starting_with_a_lease_with_no_handler_is_read_as_it_is() -> None:
    """A server never sends it; the lease comes out with empty fields (its job then fails to fetch
    its code) instead of the worker failing the whole batch."""
    batch = jobs_pb2.LeaseBatch(items=[jobs_pb2.Lease(ref=jobs_pb2.JobRef(job_id=1, lease_no=1), input=b"1")])
    (only,) = leases_from(batch)
    assert (only.ref, only.handler_id, only.script_sha256, only.input_json) == (JobRef(1, 1), "", "", b"1")


def test_a_worker_that_reads_lease_runs_gets_one_run_per_handler_and_reads_the_same_leases() -> None:
    """Measured (bench/README.md): a Lease message per job cost 1.3 us a job to build and 1.8 to read; a
    run of a handler's jobs in lists, 0.4 and 1.4."""
    specs = {"a": spec("a"), "b": spec("b")}
    leases = [lease(i, handler, 10) for i, handler in enumerate("aaabba")]
    for i, each in enumerate(leases):
        each.attempt = i % 3 + 1
    old, new = StreamLink(shares_lease_fields=True), StreamLink(shares_lease_fields=True, reads_lease_runs=True)
    old.send_leases(leases, specs)
    new.send_leases(leases, specs)
    (items,), (runs,) = sent(old), sent(new)
    assert not runs.leases.items and not items.leases.runs
    assert [(run.handler.handler_id, list(run.job_ids)) for run in runs.leases.runs] == [
        ("a", [0, 1, 2]),
        ("b", [3, 4]),
        ("a", [5]),
    ]
    assert leases_from(runs.leases) == leases_from(items.leases)
    read = leases_from(runs.leases)[4]
    assert (read.ref, read.handler_id, read.attempt, read.input_json) == (JobRef(4, 2**40), "b", 2, leases[4].input)
    assert (read.job_name, read.script_sha256, read.wheel_sha256s) == ("j" * 200, "s" * 64, ("w" * 64,) * 20)
    assert read.timeout_seconds == 30.0
    assert runs.ByteSize() < items.ByteSize()


def test_a_lease_run_whose_lists_differ_in_length_is_read_as_far_as_all_go() -> None:
    """A server never sends it; a worker neither fails the batch nor makes up a field."""
    run = jobs_pb2.LeaseRun(
        handler=jobs_pb2.Lease(handler_id="a", job_name="j", script_sha256="s"),
        job_ids=[1, 2, 3],
        lease_nos=[1, 1],
        attempts=[1, 1, 1],
        inputs=[b"1", b"2", b"3"],
    )
    assert [x.ref for x in leases_from(jobs_pb2.LeaseBatch(runs=[run]))] == [JobRef(1, 1), JobRef(2, 1)]
