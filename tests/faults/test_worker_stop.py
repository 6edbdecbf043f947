"""A worker told to stop while its server stops: it leaves as soon as its jobs end, and loses no result.

The server stops first (its drain ends the worker's stream; the worker reconnects with backoff to
nothing) or the worker is told first and the server's drain comes while its jobs still run. Either
way the results of those jobs can no longer be acknowledged: the worker must not wait its grace
(30 s) out for that, and its next run sends them. A result lost on the way shows as a second run of
its job (the restarted server takes back a lease the worker's Hello does not name, and leases it
again); a result counted twice, in the invariants.
"""

from __future__ import annotations

import signal
import time

import pytest

from netdist.testing import Process, wait_until
from tests.faults.conftest import Rig

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

COUNT = 6
GATED = [0, 1, 2]
PROMPT_SECONDS = 10.0
"""Well under the worker's grace (30 s): a stop that waits for acknowledgements that cannot come takes that."""


def _stop_promptly(worker: Process) -> float:
    """SIGTERM ``worker``; how long it took to exit (cleanly) once told."""
    told = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: not worker.alive(), PROMPT_SECONDS, what=f"worker {worker.name} to stop")
    assert worker.popen.returncode == 0, worker.output()
    return time.monotonic() - told


@pytest.mark.parametrize("first", ["server", "worker"])
def test_a_worker_stopping_with_its_server_leaves_once_its_jobs_end_and_its_next_run_sends_their_results(
    rig: Rig, first: str
) -> None:
    rig.upload()
    worker = rig.worker("w1", slots=len(GATED))
    trace, gate = rig.root / "trace", rig.gate()
    hid = rig.add(
        "stop",
        count=COUNT,
        gate=str(gate),
        gated=GATED,
        trace=str(trace),
    )
    rig.worker_id(worker)

    def ended() -> set[int]:
        return {i for what, i, _, _ in rig.traces(trace) if what == "end"}

    wait_until(
        lambda: (
            sum(j.progress_text == "waiting at the gate" for h in rig.api.handlers() for j in h.running) == len(GATED)
        ),
        30,
        what="the gated jobs to run, and the server to know",
    )
    port = rig.cluster.port
    if first == "worker":  # told to stop while its jobs run; then the server drains it
        worker.popen.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping: waiting up to" in worker.output(), 10, what="the worker to be stopping")
    assert rig.server.stop() == 0
    gate.touch()  # the jobs end with the server gone: their results cannot be acknowledged
    wait_until(lambda: set(GATED) <= ended(), 30, what="the gated jobs to end")
    if first == "worker":
        wait_until(lambda: not worker.alive(), PROMPT_SECONDS, what="the stopping worker to leave")
        assert worker.popen.returncode == 0, worker.output()
    else:
        _stop_promptly(worker)
    assert f"{len(GATED)} result(s) not acknowledged by the server are kept in" in worker.output()
    assert "grace period over" not in worker.output()

    rig.restart_server(port)
    again = rig.worker("w1", slots=len(GATED))  # the same cache dir: the same worker id and its kept results
    wait_until(lambda: "left unacknowledged" in again.output(), 30, what="the next run to take the kept results")
    rig.finish(hid)
    rig.warmed_up()
    snap = rig.verify(hid, count=COUNT)
    assert all(j.attempts == 1 for j in snap.jobs), [(j.index, j.attempts) for j in snap.jobs]
    runs = sorted((i, attempt) for what, i, attempt, _ in rig.traces(trace) if what == "end" and i in GATED)
    assert runs == [(i, 1) for i in GATED], "a gated job ran again: its first result was lost"
    _stop_promptly(again)
    assert "not acknowledged" not in again.output()
