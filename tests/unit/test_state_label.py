"""A handler's state as every view labels it: a finished run never hides the jobs that failed for good."""

from __future__ import annotations

from netdist.server.states import state_label


def test_the_label_counts_failed_jobs_of_a_finished_handler_only() -> None:
    assert state_label("finished", processed=10, failed=0) == "finished"
    assert state_label("finished", processed=7, failed=3) == "finished, 3 of 10 jobs failed"
    assert state_label("finished", processed=0, failed=10) == "finished, all 10 jobs failed"
    assert state_label("finished", processed=0, failed=1) == "finished, its only job failed"
    assert state_label("running", processed=0, failed=5) == "running"  # the Failed column says it while running
    assert state_label("failed", processed=1, failed=2) == "failed"  # the message says why
