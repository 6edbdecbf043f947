"""What the peers' runners share: the arguments, the timing of the two workloads, and the JSON they print.

Each runner prints one JSON object on its last line of stdout:
``{"jobs_per_s": ..., "rtt_p50_ms": ..., "rtt_p99_ms": ..., ...}``; bench/peers.py reads it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs in the throughput run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--latency-samples", type=int, default=300, help="single-job round trips timed")
    parser.add_argument("--warmup", type=int, default=100, help="untimed jobs first")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run")
    return parser.parse_args()


def measure(
    args: argparse.Namespace, *, run_batch: Callable[[int], None], round_trip: Callable[[], None]
) -> dict[str, object]:
    """Warm up, then time ``run_batch(jobs)`` (submit all, wait for all) and ``round_trip()`` one at a time."""
    run_batch(args.warmup)
    start = time.perf_counter()
    run_batch(args.jobs)
    seconds = time.perf_counter() - start
    samples = []
    for _ in range(args.latency_samples):
        t0 = time.perf_counter()
        round_trip()
        samples.append(1000 * (time.perf_counter() - t0))
    samples.sort()
    return {
        "jobs": args.jobs,
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(args.jobs / seconds, 1),
        "rtt_samples": len(samples),
        "rtt_p50_ms": round(statistics.median(samples), 2) if samples else None,
        "rtt_p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 2) if samples else None,
    }


def report(result: dict[str, object]) -> None:
    print(json.dumps(result), flush=True)
