"""How every view labels a handler's state: shared by the server (its replies) and ``netdist-admin
watch`` (which keeps the label up to date from the event stream)."""

from __future__ import annotations

FINISHED = "finished"


def state_label(state: str, *, processed: int, failed: int) -> str:
    """A handler's state as every view shows it (list, show, ``--json``, ``watch``, status).

    A handler that ran out of work is ``finished`` whatever became of its jobs: the handler itself did
    not fail (``failed`` says that: its own code raised, or too many results in a row failed). Jobs that
    failed for good are part of the label, so ``finished`` never hides them.
    """
    if state != FINISHED or failed == 0:
        return state
    if processed == 0:
        return f"{state}, all {failed} jobs failed" if failed != 1 else f"{state}, its only job failed"
    return f"{state}, {failed} of {processed + failed} jobs failed"
