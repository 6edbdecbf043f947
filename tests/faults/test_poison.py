"""Poison jobs fail alone, after their attempts, with a clear error; a handler whose
every job fails stops soon."""

from __future__ import annotations

import pytest

from tests.faults.conftest import Rig

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_jobs_that_exit_segfault_or_raise_fail_alone_and_the_run_completes(rig: Rig) -> None:
    rig.upload()
    rig.worker_id(rig.worker("w1", slots=2))
    hid = rig.add(
        "poison",
        settings="auto-start = true\nmax-attempts = 2",
        count=24,
        poison={"3": "exit", "7": "segv", "11": "raise"},
    )
    info = rig.finish(hid)
    assert (info.jobs_processed, info.jobs_failed) == (21, 3)
    rig.warmed_up()
    snap = rig.verify(hid, count=24, failing={3: "exited with code 7", 7: "SIGSEGV", 11: "fails on purpose"})
    assert {i: f["attempts"] for i, f in snap.state["failed"].items()} == {"3": 2, "7": 2, "11": 2}


def test_a_job_over_max_job_memory_fails_alone(rig: Rig) -> None:
    """Needs the worker's --max-job-memory (MB): a job allocating past it is stopped."""
    rig.upload()
    rig.worker_id(rig.worker("w1", slots=2, extra_args=("--max-job-memory", "200")))
    hid = rig.add("memory", settings="auto-start = true\nmax-attempts = 2", count=8, poison={"2": "memory"})
    rig.finish(hid, timeout=90)
    rig.warmed_up()
    snap = rig.verify(hid, count=8, failing={2: "memory"})
    assert snap.state["failed"]["2"]["attempts"] == 2


def test_a_handler_whose_jobs_all_fail_stops_within_n_plus_its_slots(rig: Rig) -> None:
    errors, slots = 3, 2
    rig.upload()
    rig.worker_id(rig.worker("w1", slots=slots))
    trace = rig.root / "trace"
    hid = rig.add(
        "failing",
        settings=f"auto-start = true\nmax-attempts = 1\nmax-sequenced-errors = {errors}",
        count=40,
        fail_all=True,
        sleep=0.0,
        trace=str(trace),
    )
    info = rig.api.wait_state(hid, "failed", timeout=60)
    assert "error" in info.message.lower(), info.message
    rig.warmed_up()
    runs = [t for t in rig.traces(trace) if t[0] == "start"]
    assert 0 < len(runs) <= errors + slots, f"{len(runs)} runs before the handler stopped: {runs}"
    rig.verify(hid, count=40, finished=False, failing={i: "fails on purpose" for i in range(40)})
