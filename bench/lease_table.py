"""The lease table's CPU per job, alone: pick, settle, settled and due_leases over rounds of jobs.

The table runs on the server's event loop for every job, and a change to it moves a 20,000-job
throughput run by less than that run's noise (about 5% here). This times its hot path with nothing
else around: one handler, one worker, ROUND jobs a round (as a 2,000-job create_more_jobs gives them),
each leased, answered and committed; the best round of --rounds, after a few to warm up.

    .venv/bin/python bench/lease_table.py            # prints microseconds per job
"""

from __future__ import annotations

import argparse
import gc
import math
import time

from netdist.jobscript import JobSettings
from netdist.server.clock import SystemClock
from netdist.server.lease_model import HandlerSpec, ReadyJob, ResultIn, WorkerInfo
from netdist.server.leases import LeaseTable

ROUND = 2000
WARMUP_ROUNDS = 5


def best_round_seconds(rounds: int) -> float:
    table = LeaseTable(clock=SystemClock(), reconnect_grace_seconds=2.0, silent_after_seconds=15.0)
    handler_id = "h" * 32
    settings = JobSettings(package="p", handler="H", job="h")
    spec = HandlerSpec(handler_id=handler_id, job_name="h", script_sha256="0" * 64, environment=(), settings=settings)
    table.add_handler(spec, counts={}, streak=0, active=True)
    table.connect(WorkerInfo(worker_id="w", name="w", labels={}, slots=1), [])
    table.set_capacity("w", ROUND + 1)
    table.workers["w"].ewma_seconds = table.handlers[handler_id].ewma_seconds = 1e-5  # a no-op job's run time
    best, next_id = math.inf, 1
    for index in range(WARMUP_ROUNDS + rounds):
        table.enqueued(handler_id, ROUND)
        ready = [ReadyJob(i, 0, 0, b'{"i": 1}', True, "null") for i in range(next_id, next_id + ROUND)]
        table.refilled(handler_id, ready, more=False)
        next_id += ROUND
        started = time.perf_counter()
        leases = table.pick()
        results = [ResultIn(lease.job_id, lease.lease_no, "null", None, 1e-5) for lease in leases]
        _, settlements, _ = table.settle("w", results)
        table.settled(settlements, {s.result.job_id for s in settlements})
        table.due_leases(math.inf)
        seconds = time.perf_counter() - started
        if len(leases) != ROUND:
            raise SystemExit(f"a round leased {len(leases)} jobs, not {ROUND}")
        if index >= WARMUP_ROUNDS:
            best = min(best, seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    gc.disable()  # a collection inside a round would time the collector, not the table
    print(f"lease table: {best_round_seconds(args.rounds) / ROUND * 1e6:.2f} us a job (best of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
