"""Results as lists on the wire: a server whose Welcome says it reads them gets the results of jobs
that succeeded as four lists, and reads back what Result messages carried (lease runs, the same for
leases: test_wire_sizes.py). Measured (bench/README.md): a Result message per job cost 0.9 us a job
to build and 0.9 to read, the lists 0.3 and 0.4."""

from __future__ import annotations

from netdist.api.v1 import jobs_pb2
from netdist.server.job_service import results_from
from netdist.server.lease_model import ResultIn
from netdist.worker.job import JobRef, JobResult
from netdist.worker.stream_messages import result_batch


def _done(job_id: int, output: bytes | None = b'{"ok": true}') -> JobResult:
    return JobResult(JobRef(job_id, 7), output, None, 0.25 * job_id)


def test_results_of_jobs_that_succeeded_go_as_lists_and_the_server_reads_the_same() -> None:
    results = [_done(1), _done(2, None), _done(3, "é".encode())]
    lists, items = result_batch(results, lists=True), result_batch(results)
    assert list(lists.job_ids) == [1, 2, 3] and not lists.items
    assert len(items.items) == 3 and not items.job_ids
    assert results_from(lists) == results_from(items)
    assert results_from(lists) == [
        ResultIn(1, 7, '{"ok": true}', None, 0.25),
        ResultIn(2, 7, "null", None, 0.5),
        ResultIn(3, 7, "é", None, 0.75),
    ]
    assert lists.ByteSize() < items.ByteSize()


def test_a_batch_with_a_failed_job_goes_as_items_so_the_server_reads_it_in_order() -> None:
    """The failed streak of a handler counts results in the order they came."""
    failed = JobResult.failed(JobRef(2, 7), "ValueError", "bad", duration_seconds=0.5)
    batch = result_batch([_done(1), failed, _done(3)], lists=True)
    assert not batch.job_ids and [r.ref.job_id for r in batch.items] == [1, 2, 3]
    read = results_from(batch)
    assert [r.job_id for r in read] == [1, 2, 3]
    assert read[1].error is not None and read[1].error["type"] == "ValueError"


def test_result_lists_of_different_lengths_are_read_as_far_as_all_go() -> None:
    """A worker never sends it; the server reads what pairs up (the rest comes again, unacknowledged)."""
    batch = jobs_pb2.ResultBatch(
        job_ids=[1, 2, 3], lease_nos=[1, 1, 1], outputs=[b"1", b"2"], duration_seconds=[0.1] * 3
    )
    assert [r.job_id for r in results_from(batch)] == [1, 2]
