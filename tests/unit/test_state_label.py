"""A handler's state as every view labels it: a finished run never hides the jobs that failed for good."""

from __future__ import annotations

from netdist.adminctl.live_model import LiveModel
from netdist.api.v1 import admin_pb2
from netdist.state_labels import state_label


def test_the_label_counts_failed_jobs_of_a_finished_handler_only() -> None:
    assert state_label("finished", processed=10, failed=0) == "finished"
    assert state_label("finished", processed=7, failed=3) == "finished, 3 of 10 jobs failed"
    assert state_label("finished", processed=0, failed=10) == "finished, all 10 jobs failed"
    assert state_label("finished", processed=0, failed=1) == "finished, its only job failed"
    assert state_label("running", processed=0, failed=5) == "running"  # the Failed column says it while running
    assert state_label("failed", processed=1, failed=2) == "failed"  # the message says why


def test_the_watch_model_relabels_a_handler_as_its_events_arrive() -> None:
    model = LiveModel()
    running = admin_pb2.HandlerInfo(id="h1", job_name="j", state="running", state_label="running")
    model.apply(admin_pb2.WatchResponse(snapshot=admin_pb2.WatchSnapshot(handlers=[running])))
    counts = admin_pb2.JobCountsEvent(handler_id="h1", jobs_processed=7, jobs_failed=3)
    finished = admin_pb2.HandlerEvent(handler_id="h1", change="state", state="finished")
    model.apply_event(admin_pb2.WatchEvent(job_counts=counts))
    model.apply_event(admin_pb2.WatchEvent(handler=finished))
    assert model.handlers["h1"].state_label == "finished, 3 of 10 jobs failed"
