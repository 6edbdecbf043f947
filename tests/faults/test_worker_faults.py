"""Workers that die, freeze or are told to stop while they hold jobs."""

from __future__ import annotations

import signal
import time

import pytest

from netdist.testing import wait_until
from tests.faults.conftest import Rig
from tests.faults.invariants import JobRow

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_a_worker_killed_mid_job_has_that_job_rerun_once_elsewhere(rig: Rig) -> None:
    rig.upload()
    victim = rig.worker("victim")
    trace, gate = rig.root / "trace", rig.gate()
    hid = rig.add("kill9", count=12, sleep=0.02, gate=str(gate), gated=[3], gate_attempts=[1], trace=str(trace))
    wait_until(lambda: ("start", 3, 1) in [t[:3] for t in rig.traces(trace)], 30, what="job 3 to start on the victim")
    # Killed only once the server has heard of the start (a start it never heard of is not charged):
    # the worker sends a job's start before its progress, so the gate's progress text is the sign.
    wait_until(
        lambda: any(j.progress_text == "waiting at the gate" for h in rig.api.handlers() for j in h.running),
        30,
        what="the server to see job 3 running",
    )
    rig.kill_worker(victim)  # SIGKILL, its job process with it
    rig.worker("rescuer", slots=2)
    rig.finish(hid)
    rig.warmed_up()
    snap = rig.verify(hid, count=12)
    job3 = next(j for j in snap.jobs if j.index == 3)
    assert job3.attempts == 2  # the killed run had started: it is charged
    assert [(t[1], t[2]) for t in rig.traces(trace) if t[0] == "end" and t[1] == 3] == [(3, 2)]


def test_a_frozen_workers_late_error_neither_fails_nor_revokes_the_new_lease(rig: Rig) -> None:
    """SIGSTOP a worker past the job-timeout: its job goes to another worker.
    SIGCONT: the frozen worker's late error for the old lease is stale and
    changes nothing; the job ends processed once, by the new lease."""
    rig.upload()
    frozen = rig.worker("frozen")
    trace, gate = rig.root / "trace", rig.gate()
    timeout = 4.0
    hid = rig.add(
        "sigstop",
        settings=f"auto-start = true\njob-timeout = {timeout}\nmax-attempts = 2",
        count=3,
        stall_at=0,
        stall_seconds=1.0,
        stall_fails=True,
        gate=str(gate),
        gated=[0],
        gate_attempts=[2],
        trace=str(trace),
    )
    frozen_id = rig.worker_id(frozen)
    wait_until(lambda: ("start", 0, 1) in [t[:3] for t in rig.traces(trace)], 30, what="job 0 to start")
    rig.stop_worker(frozen)
    stopped_at = time.monotonic()

    def job0() -> JobRow:
        return next(j for j in rig.jobs(hid).jobs if j.index == 0)

    # Stopped past the job-timeout, with its lease taken back...
    wait_until(
        lambda: (
            (job0().worker_id != frozen_id or job0().status != "leased") and time.monotonic() - stopped_at > timeout
        ),
        30,
        what="the frozen worker's lease to be taken back",
    )
    rescuer = rig.worker("rescuer")
    rescuer_id = rig.worker_id(rescuer)
    # ... and the rescuer holds job 0's new lease (its attempt 2 waits at the gate).
    wait_until(
        lambda: job0().worker_id == rescuer_id and job0().status == "leased", 30, what="the rescuer to hold job 0"
    )
    current = job0()
    wait_until(
        lambda: ("end", 0, 1) in [t[:3] for t in rig.traces(trace)],
        30,
        what="the frozen worker's job to end (with an error) while its worker is stopped",
    )
    rig.cont_worker(frozen)
    # The frozen worker reconnects and sends its late error first; then it runs
    # jobs 1 and 2 (the rescuer is busy at the gate).
    wait_until(lambda: len(rig.jobs(hid).by_status("processed")) == 2, 30, what="jobs 1 and 2")
    after = job0()
    assert (after.status, after.worker_id, after.lease_no) == ("leased", rescuer_id, current.lease_no), (
        "the stale error changed the current lease"
    )
    assert rig.jobs(hid).state["failed"] == {}
    gate.touch()
    rig.finish(hid)
    rig.warmed_up()
    snap = rig.verify(hid, count=3)
    assert next(j for j in snap.jobs if j.index == 0).attempts == 2


def test_sigterm_hands_back_unstarted_jobs_at_once_and_uncharged(rig: Rig) -> None:
    """With max-attempts = 1, a job handed back and charged anyway would fail."""
    rig.upload()
    victim = rig.worker("victim", slots=2)
    trace, gate = rig.root / "trace", rig.gate()
    hid = rig.add(
        "sigterm",
        settings="auto-start = true\nmax-attempts = 1",
        count=60,
        gate=str(gate),
        gate_from=20,
        trace=str(trace),
    )
    victim_id = rig.worker_id(victim)

    def held() -> list[int]:  # of the jobs from the gate on: a fast one before it may still be in flight
        return [j.index for j in rig.jobs(hid).by_status("leased") if j.worker_id == victim_id and j.index >= 20]

    def running() -> set[int]:
        return {t[1] for t in rig.traces(trace) if t[0] == "start" and t[1] >= 20}

    # Fast jobs first teach the worker to prefetch; then two jobs run at the
    # gate and more wait behind them, leased but not started.
    wait_until(lambda: len(running()) == 2 and len(held()) > 2, 30, what="running and prefetched jobs")
    prefetched = set(held()) - running()
    victim.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: sorted(held()) == sorted(running()), 10, what="the unstarted jobs to come back")
    assert victim.alive()  # still finishing its two running jobs: the hand-back came first
    back = [(j.index, j.status, j.attempts) for j in rig.jobs(hid).jobs if j.index in prefetched]
    assert back and all(status == "available" and attempts == 0 for _, status, attempts in back), back
    rig.worker("rescuer", slots=2)
    gate.touch()
    assert victim.popen.wait(30) == 0
    rig.finish(hid)
    rig.warmed_up()
    snap = rig.verify(hid, count=60)
    assert all(j.attempts == 1 for j in snap.jobs)
