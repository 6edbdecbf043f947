"""What a worker hears back for a batch of results, and what the log says of a job charged an attempt."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from netdist.server.lease_model import AckOutcome, Ref, Requeue, ResultIn, Verdict

log = logging.getLogger("netdist.server.dispatcher")


def result_acks(
    worker_id: str,
    results: Sequence[ResultIn],
    verdicts: Sequence[Verdict],
    stored: set[int],
    outcomes: Mapping[Ref, str],
    refused: Counter[str],
) -> list[tuple[Ref, AckOutcome]]:
    """An ack per result the store took (ACCEPTED) or classified (STALE, UNKNOWN, DUPLICATE), in order.

    A result the table accepted but the store did not take gets no ack: the
    worker sends it again. ``refused`` counts the others by outcome.
    """
    acks: list[tuple[Ref, AckOutcome]] = []
    for result, verdict in zip(results, verdicts, strict=True):
        if verdict == Verdict.ACCEPTED and result.job_id in stored:
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
    return acks


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
