"""Acks on the wire: a worker that reads accepted results as two packed lists gets them so, one that
does not gets items; both read back the same acks."""

from __future__ import annotations

from collections import Counter

import pytest

from netdist.api.v1 import jobs_pb2
from netdist.server.job_service import StreamLink
from netdist.server.lease_model import ResultIn, Verdict
from netdist.server.result_acks import result_acks
from netdist.worker.job import Ack, JobRef
from netdist.worker.job import AckOutcome as WorkerOutcome
from netdist.worker.stream_messages import acks_from

RESULTS = [ResultIn(job_id, 1, "1", None, 0.1) for job_id in (3, 4, 5, 6)]


def _sent(packed: bool, verdicts: list[Verdict], stored: set[int]) -> jobs_pb2.Ack:
    link = StreamLink(reads_accepted_refs=packed)
    outcomes = {(6, 1): "stale"} if Verdict.NOT_CURRENT in verdicts else {}
    link.send_acks(result_acks("w", RESULTS, verdicts, stored, outcomes, refused=Counter()))
    message = link.outbox.get_nowait()
    assert message is not None
    return message.ack


@pytest.mark.parametrize("packed", [True, False])
def test_every_result_accepted(packed: bool) -> None:
    ack = _sent(packed, [Verdict.ACCEPTED] * 4, {3, 4, 5, 6})
    assert (len(ack.accepted_job_ids), len(ack.items)) == ((4, 0) if packed else (0, 4))
    assert acks_from(ack) == [Ack(JobRef(j, 1), WorkerOutcome.ACCEPTED) for j in (3, 4, 5, 6)]


@pytest.mark.parametrize("packed", [True, False])
def test_some_accepted_one_stale_one_not_stored_one_in_flight(packed: bool) -> None:
    verdicts = [Verdict.ACCEPTED, Verdict.ACCEPTED, Verdict.IN_FLIGHT, Verdict.NOT_CURRENT]
    ack = _sent(packed, verdicts, {3})  # 4 was accepted but not stored: no ack, the worker sends it again
    got = acks_from(ack)
    assert sorted(got) == sorted([Ack(JobRef(3, 1), WorkerOutcome.ACCEPTED), Ack(JobRef(6, 1), WorkerOutcome.STALE)])
    if packed:
        assert list(ack.accepted_job_ids) == [3] and [i.outcome for i in ack.items] == [jobs_pb2.ACK_OUTCOME_STALE]
    else:  # in the order of the results, as before the packed lists
        assert [(i.ref.job_id, i.outcome) for i in ack.items] == [
            (3, jobs_pb2.ACK_OUTCOME_ACCEPTED),
            (6, jobs_pb2.ACK_OUTCOME_STALE),
        ]


def test_lists_of_different_lengths_pair_up_as_far_as_both_go() -> None:
    ack = jobs_pb2.Ack(accepted_job_ids=[1, 2, 3], accepted_lease_nos=[7])
    assert acks_from(ack) == [Ack(JobRef(1, 7), WorkerOutcome.ACCEPTED)]
