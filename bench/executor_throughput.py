"""Throughput of the worker's executor alone: no server, no gRPC, no-op jobs through real child processes.

    .venv/bin/python bench/executor_throughput.py [--jobs 20000] [--slots 1] [--rounds 3]

Each round starts an :class:`~netdist.worker.executor.Executor`, warms its
children up, submits ``--jobs`` no-op jobs at once and times them from the
submit to the last result. Prints jobs/s and µs per job for each round, and
the CPU seconds of the worker side (this process) and of the children.
Asserts nothing about time; the machine is shared, so compare runs from one
sitting, next to the load average it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from netdist.worker.executor import Executor
from netdist.worker.job import Environment, Job, JobRef, JobResult

NOOP_SCRIPT = "def process(job_input, ctx):\n    return job_input\n"
WARM_UP_JOBS = 200
SUBMIT_BATCH = 1000


async def _round(environment: Environment, *, jobs: int, slots: int) -> tuple[float, float, int]:
    """Seconds for ``jobs`` jobs, the worker side's CPU seconds in them, and the failures."""
    done = asyncio.Event()
    results: list[JobResult] = []
    target = WARM_UP_JOBS

    def on_result(result: JobResult) -> None:
        results.append(result)
        if len(results) >= target:
            done.set()

    executor = Executor(slots=slots, on_result=on_result)
    try:
        executor.submit(*(_job(environment, i) for i in range(WARM_UP_JOBS)))
        await done.wait()
        done.clear()
        results.clear()
        target = jobs
        started, cpu_started = time.perf_counter(), time.process_time()
        for first in range(0, jobs, SUBMIT_BATCH):  # as the worker submits each batch of leases
            executor.submit(
                *(_job(environment, WARM_UP_JOBS + i) for i in range(first, min(jobs, first + SUBMIT_BATCH)))
            )
        await done.wait()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await executor.close()
    return elapsed, cpu, sum(r.error is not None for r in results)


def _job(environment: Environment, i: int) -> Job:
    return Job(
        ref=JobRef(job_id=i + 1, lease_no=1),
        handler_id="bench",
        job_name="noop",
        attempt=1,
        environment=environment,
        input_json=b'{"i":%d}' % i,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netdist-executor-bench-") as tmp:
        script = Path(tmp) / "noop.py"
        script.write_text(NOOP_SCRIPT)
        environment = Environment(script_sha256="noop", script_path=script)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for n in range(args.rounds):
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            elapsed, cpu, failed = asyncio.run(_round(environment, jobs=args.jobs, slots=args.slots))
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            child_cpu = sum(getattr(children, f) - getattr(children_before, f) for f in ("ru_utime", "ru_stime"))
            print(
                f"round {n + 1}: {args.jobs / elapsed:8,.0f} jobs/s  {elapsed / args.jobs * 1e6:5.1f} µs/job  "
                f"CPU µs/job worker {cpu / args.jobs * 1e6:5.1f}, children {child_cpu / args.jobs * 1e6:5.1f}"
                f"{f'  FAILED {failed}' if failed else ''}"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
