"""When the outbox sends: a lone job's result at once, results of a busy worker batched."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import cast

from netdist.worker.connection import Connection
from netdist.worker.job import JobRef, JobResult
from netdist.worker.ledger import Ledger
from netdist.worker.outbox import Outbox

A, B = JobRef(job_id=1, lease_no=1), JobRef(job_id=2, lease_no=1)


class Wire:
    """Stands in for the stream's sender: records what the outbox sends."""

    ready = True

    def __init__(self) -> None:
        self.results: list[list[JobRef]] = []

    def send_capacity(self, jobs: int) -> None:
        pass

    def send_results(self, results: Sequence[JobResult]) -> None:
        self.results.append([r.ref for r in results])

    def send_started(self, refs: Iterable[JobRef]) -> None:
        pass


def outbox_with(*refs: JobRef) -> tuple[Outbox, Wire]:
    ledger = Ledger()
    for ref in refs:
        ledger.take(ref)
    outbox, wire = Outbox(ledger, slots=2, want=lambda: 2), Wire()
    outbox.connection = cast(Connection, wire)
    return outbox, wire


def test_the_result_of_the_only_job_held_goes_at_once() -> None:
    async def run() -> list[list[JobRef]]:
        outbox, wire = outbox_with(A)
        outbox.result(JobResult(ref=A, output_json=b"1"))
        return wire.results  # before the loop ran anything: no timer was waited for

    assert asyncio.run(run()) == [[A]]


def test_a_result_waits_briefly_for_the_others_of_a_busy_worker() -> None:
    async def run() -> tuple[list[list[JobRef]], list[list[JobRef]]]:
        outbox, wire = outbox_with(A, B)
        outbox.result(JobResult(ref=A, output_json=b"1"))
        before = list(wire.results)
        outbox.result(JobResult(ref=B, output_json=b"2"))  # the last one held: both go together
        return before, wire.results

    before, after = asyncio.run(run())
    assert before == [] and after == [[A, B]]
