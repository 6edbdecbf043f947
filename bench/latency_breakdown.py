"""Where a job's time goes, stage by stage: the latency run of bench/throughput.py with stage stamps on.

    .venv/bin/python bench/latency_breakdown.py [--samples 300] [--postgres]

The server and the worker run with ``NETDIST_TRACE_STAGES=1`` (src/netdist/stage_trace.py): each writes
``netdist-stage <time> <stage>`` at each stage of a job's way. The ``Latency`` handler keeps one job in
flight, so the stages of one job follow each other in time; each job's are read back from the logs (the
20 warm-up jobs left out) and the table gives the median and p90 of each step, in milliseconds, from
the handler's call returning with the new job to ``process_result`` returning with its result. The
dispatch and round trip the handler measures itself (enqueue in the handler -> ``process`` starts;
enqueue -> ``process_result``) are printed under it: dispatch minus the steps up to "process started"
is the time in the handler host before its call returned. Same clock for all (one machine). Results
also go to bench/results/latency_breakdown.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ["NETDIST_TRACE_STAGES"] = "1"  # before the server and worker start: they inherit it

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput

STEPS = [
    ("handler-returned", "jobs-queued", "the new job queued: its insert to the writer, itself to the lease table"),
    ("jobs-queued", "leases-sent", "its lease picked and written to the worker's stream"),
    ("leases-sent", "lease-received", "the worker has it (gRPC)"),
    ("lease-received", "job-started", "process() started (worker, child process)"),
    ("job-started", "job-finished", "the no-op job ran; its result is back in the worker"),
    ("job-finished", "results-received", "the server has the result (gRPC)"),
    ("results-received", "results-taken", "its write ran; taken by the handler's runtime (from memory)"),
    ("results-taken", "handler-returned", "process_result returned (handler host)"),
]
ASIDE = [
    ("jobs-queued", "jobs-committed", "(alongside: the new job committed, with its handler's state)"),
    ("jobs-queued", "leases-committed", "(alongside: its lease committed)"),
    ("results-received", "results-committed", "(alongside: the result committed, before the handler's call is)"),
]
"""A job is leased while its insert is on the way, and its lease goes out while the lease's write is;
the result goes to the handler while its write commits: no commit is a step on the job's path (the
result's commit queues behind the other two, and the handler's call commits after it). A lease held lazily
(the default, ``--lease-write-delay``) is never written for a job this short: its row is left out unless
every job's lease was (``NETDIST_LEASE_WRITE_DELAY=0``)."""
WARMUP = 20


def read_stamps(logs: Path) -> list[tuple[float, str]]:
    stamps = []
    for log in logs.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "netdist-stage":
                stamps.append((float(parts[1]), parts[2]))
    return sorted(stamps)


def cycles(stamps: list[tuple[float, str]]) -> list[dict[str, float]]:
    """Each job's stages: from the handler call whose jobs were queued, each next stage in order."""
    found = []
    for i, (at, stage) in enumerate(stamps):
        if stage != "jobs-queued":
            continue
        before = [t for t, s in stamps[:i] if s == "handler-returned"]
        if not before:
            continue
        cycle = {"handler-returned": before[-1], "jobs-queued": at}
        for _, aside, _ in ASIDE:
            committed = next((t for t, s in stamps[i + 1 :] if s == aside), None)
            if committed is not None:
                cycle[aside] = committed
        j = i + 1
        for _, want, _ in STEPS[1:]:
            while j < len(stamps) and stamps[j][1] != want:
                j += 1
            if j == len(stamps):
                break
            cycle[want if want != "handler-returned" else "processed"] = stamps[j][0]
            j += 1
        if "processed" in cycle:
            found.append(cycle)
    return found[WARMUP:]


def breakdown(jobs: list[dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    asides = [step for step in ASIDE if all(step[1] in job for job in jobs)]
    for start, stage, what in [*STEPS, *asides]:
        end = "processed" if stage == "handler-returned" else stage
        gaps = sorted(1000 * (job[end] - job[start]) for job in jobs)
        rows.append(
            {
                "step": what,
                "from": start,
                "to": end,
                "p50_ms": round(statistics.median(gaps), 3),
                "p90_ms": round(gaps[int(0.9 * (len(gaps) - 1))], 3),
            }
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=300, help="jobs timed, after 20 warm-up ones (default 300)")
    p.add_argument("--postgres", action="store_true", help="store in this machine's PostgreSQL instead of SQLite")
    p.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "latency_breakdown.json"
    )
    opts = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster in the finally blocks
    args = throughput.parse_args(
        ["--configs", "", "--latency-samples", str(opts.samples), *(["--postgres"] if opts.postgres else [])]
    )
    workdir = Path(tempfile.mkdtemp(prefix="netdist-breakdown-"))
    try:
        latency = throughput.run_latency(workdir, args)
        jobs = cycles(read_stamps(workdir / "latency" / "logs"))
    finally:
        throughput.reap_strays()
        shutil.rmtree(workdir, ignore_errors=True)
    if not jobs:
        print(f"no complete job found in the stamps; the run: {latency}", file=sys.stderr)
        return 1
    rows = breakdown(jobs)
    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"one job in flight, {len(jobs)} jobs, {'PostgreSQL' if args.postgres else 'SQLite'}")
    for col in ("step", "p50 ms", "p90 ms"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for row in rows:
        table.add_row(row["step"], f"{row['p50_ms']:.2f}", f"{row['p90_ms']:.2f}")
    console.print(table)
    to_start = sum(r["p50_ms"] for r in rows[:4])
    dispatch = latency.get("lat_p50_ms")
    console.print(
        f"dispatch p50 (enqueue in the handler -> process starts) {dispatch} ms; the steps up to process() "
        f"started add up to {to_start:.2f} ms (medians); round trip p50 {latency.get('rtt_p50_ms')} ms"
    )
    report: dict[str, Any] = {"store": "postgresql" if opts.postgres else "sqlite", "jobs": len(jobs)}
    report |= {"latency": latency, "steps": rows}
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"written to {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
