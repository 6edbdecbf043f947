"""The states of handlers and jobs, as stored."""

from __future__ import annotations

from enum import StrEnum


class HandlerState(StrEnum):
    IDLE = "idle"  # uploaded, never started
    RUNNING = "running"
    PAUSED = "paused"  # hands out nothing; outstanding leases stay
    STOPPED = "stopped"  # hands out nothing; outstanding leases revoked
    DISABLED = "disabled"  # does not start (manually, by schedule or auto-start) until enabled
    FINISHED = "finished"
    FAILED = "failed"  # the message says why; start or enable to try again


class JobStatus(StrEnum):
    AVAILABLE = "available"
    LEASED = "leased"
    SUCCEEDED = "succeeded"  # result stored, not yet processed by the handler
    ERRORED = "errored"  # failed for good, process_failure not yet called
    PROCESSED = "processed"
    FAILED = "failed"  # failed for good, process_failure called


def state_label(state: str, *, processed: int, failed: int) -> str:
    """A handler's state as every view shows it (list, show, ``--json``, ``watch``, status).

    A handler that ran out of work is ``finished`` whatever became of its jobs: the handler itself did
    not fail (``failed`` says that: its own code raised, or too many results in a row failed). Jobs that
    failed for good are part of the label, so ``finished`` never hides them.
    """
    if state != HandlerState.FINISHED or failed == 0:
        return state
    if processed == 0:
        return f"{state}, all {failed} jobs failed" if failed != 1 else f"{state}, its only job failed"
    return f"{state}, {failed} of {processed + failed} jobs failed"
