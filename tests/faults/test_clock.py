"""The server's wall clock jumps an hour forward, then back (libfaketime): a lease
expires after its job-timeout in real time, neither at once on +1 h nor an
hour late on -1 h, and the run goes on.

The server runs with libfaketime preloaded, reading its offset from a file
the test rewrites (FAKETIME_TIMESTAMP_FILE, read again every second); the
monotonic clock stays real (FAKETIME_DONT_FAKE_MONOTONIC). Workers and the
server's handler hosts run on the real clock (faketime/sitecustomize.py). A hand-driven worker holds the leases whose expiry is watched: it
heartbeats and reports them started but never answers, so only the server's
job-timeout can take them back (a real worker would time its job out itself).
CI installs libfaketime (`apt-get install faketime`, .ci/run).
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from netdist.server.store.schema import jobs
from netdist.testing import wait_until
from tests.faults.conftest import Rig
from tests.faults.hand import HandWorker
from tests.faults.wall_clock import faketime_env

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

JOB_TIMEOUT = 5.0
HOUR = 3600.0
COUNT = 60  # with sleep=0.5 on 2 slots: about 15 s of work, longer than both phases


def last_finished_at(rig: Rig) -> float:
    with rig.inv.engine.connect() as conn:
        return float(conn.execute(select(func.max(jobs.c.finished_at))).scalar() or 0.0)


def hold(hand: HandWorker, nth: int) -> tuple[int, int, float]:
    """Wait for the hand worker's ``nth`` lease (from 0) and report it started; (job id, lease no, when)."""
    hand.capacity(1)
    lease = hand.wait_leases(nth + 1)[nth]
    hand.started(lease)
    return lease.ref.job_id, lease.ref.lease_no, time.monotonic()


def revoked(hand: HandWorker, ref: tuple[int, int]) -> bool:
    return ref in hand.revoked


@pytest.mark.timeout(60)  # a run under way, then two job-timeouts waited out in turn: 19 s on a loaded 2-core machine
def test_wall_clock_jumps_neither_expire_leases_early_nor_stall_them(rig: Rig) -> None:
    offset = rig.root / "faketime"
    rig.restart_server(0, env=faketime_env(offset))
    rig.upload()
    rig.worker_id(rig.worker("w1", slots=2))
    hid = rig.add(
        "clock", settings=f"auto-start = true\njob-timeout = {JOB_TIMEOUT}\nmax-attempts = 4", count=COUNT, sleep=0.5
    )
    wait_until(lambda: len(rig.jobs(hid).by_status("processed")) >= 4, 60, what="the run to be under way")
    rig.warmed_up()
    hand = HandWorker(rig.server.address, "hand")
    try:
        # +1 h: by the wall clock every lease out is an hour past its deadline.
        job, lease_no, leased = hold(hand, 0)
        # The lease table's leases, each job's stored lease number then: a lease held lazily (the store
        # shows it only once it lasts) leaves its job available below it; one that came back, above.
        out = {j.id for j in rig.api.running_jobs(hid)}
        in_flight = {j.id: j.lease_no for j in rig.jobs(hid).jobs if j.id in out}
        offset.write_text(f"+{HOUR:.0f}\n")
        wait_until(
            lambda: last_finished_at(rig) > time.time() + HOUR - 60,
            30,
            what="a result stored by the server's clock an hour ahead",
        )
        assert not revoked(hand, (job, lease_no)), "the +1 h jump expired a lease at once"
        snap = rig.verify(hid, count=COUNT, finished=False)
        early = {j.index for j in snap.jobs if j.status == "available" and j.lease_no > in_flight.get(j.id, j.lease_no)}
        assert not early, f"leases expired by the jump: {early}"
        wait_until(lambda: revoked(hand, (job, lease_no)), JOB_TIMEOUT + 15, what="the held lease to expire")
        assert time.monotonic() - leased >= JOB_TIMEOUT - 1, "expired before its job-timeout"

        # -1 h: a lease taken while the clock was an hour ahead must still expire
        # after its job-timeout, not an hour later.
        job, lease_no, leased = hold(hand, 1)
        offset.write_text("+0\n")
        wait_until(
            lambda: revoked(hand, (job, lease_no)), JOB_TIMEOUT + 15, what="the lease taken before -1 h to expire"
        )
        assert time.monotonic() - leased >= JOB_TIMEOUT - 1
    finally:
        hand.close()
    rig.finish(hid, timeout=60)
    snap = rig.verify(hid, count=COUNT)
    assert all(j.attempts <= 3 for j in snap.jobs)  # the two held leases may have been one job's
