"""What a worker hears back for a batch of results, and what the log says of a job charged an attempt."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from netdist.server.lease_model import AckOutcome, Ref, Requeue, ResultIn, Verdict

log = logging.getLogger("netdist.server.dispatcher")


class ResultAcks(NamedTuple):
    """What a worker hears back for a batch of results."""

    accepted: Sequence[ResultIn]
    """The results stored for their lease."""
    ordered: list[tuple[Ref, AckOutcome]] | None
    """Every ack in the order of the results: those stored (ACCEPTED) and those the store classified
    (STALE, UNKNOWN, DUPLICATE). None when every result was accepted: ``accepted`` says it all."""

    def __bool__(self) -> bool:
        return bool(self.accepted or self.ordered)


def result_acks(
    worker_id: str,
    results: Sequence[ResultIn],
    verdicts: Sequence[Verdict],
    stored: set[int],
    outcomes: Mapping[Ref, str],
    refused: Counter[str],
) -> ResultAcks:
    """An ack for each result the store took (accepted) or classified (the others), in order.

    A result the table accepted but the store did not take gets no ack: the
    worker sends it again. ``refused`` counts the others by outcome.
    """
    if len(stored) == len(results) and verdicts.count(Verdict.ACCEPTED) == len(verdicts):
        return ResultAcks(results, None)  # every one accepted and stored: the usual case, nothing built per result
    accepted: list[ResultIn] = []
    acks: list[tuple[Ref, AckOutcome]] = []
    for result, verdict in zip(results, verdicts, strict=True):
        if verdict == Verdict.ACCEPTED and result.job_id in stored:
            accepted.append(result)
            acks.append((result.ref, AckOutcome.ACCEPTED))
        elif verdict == Verdict.NOT_CURRENT:
            outcome = AckOutcome(outcomes[result.ref])
            refused[outcome] += 1
            if outcome != AckOutcome.DUPLICATE:
                log.info(
                    "worker %s sent a result for job %d lease %d: %s (not its current lease); dropped",
                    worker_id,
                    result.job_id,
                    result.lease_no,
                    outcome,
                )
            acks.append((result.ref, outcome))
    return ResultAcks(accepted, acks)


def log_charged(requeues: Sequence[Requeue]) -> None:
    """One line per job that lost a started lease (charged an attempt), and why."""
    for q in requeues:
        if q.charged:
            log.info(
                "job %d (lease %d) of handler %s: %s%s",
                q.job_id,
                q.lease_no,
                q.handler_id,
                q.error.get("message", ""),
                "; out of attempts" if q.final else "",
            )
