"""``make bench-peers``: netdist, Ray and Celery on the same workload, interleaved, in one sitting.

Each round runs, one after the other on this machine: netdist (bench/throughput.py, 2 worker processes
of 1 slot, SQLite with synchronous=FULL), netdist on PostgreSQL (``netdist-pg``: a fresh database of
this machine's server on its unix socket; left out with a message when none answers), Ray (bench/peers/ray_noop.py, num_cpus=2) and Celery with
Redis, results on (bench/peers/celery_noop.py, a prefork worker of 2 processes). Each does the same two
things: N no-op jobs submitted at once, timed until the last result is in, and the single-job round trip
(submit one, wait for its result) timed S times. The table shows the median of the rounds for each
system and the ratios netdist ÷ peer computed within each round (a ratio counts only when both sides ran
in the same sitting). Celery is skipped, with a message, when there is no ``redis-server``.

The peers run in their own virtual environment (bench/.peers-venv, made by ``make bench-peers`` from
bench/peers/requirements.txt) so that netdist's stays as it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
console = Console(width=None if sys.stdout.isatty() else 150)


def run_netdist(args: argparse.Namespace, *, postgres: bool = False) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, str(BENCH_DIR / "throughput.py"), "--configs", "2x1", "--jobs", str(args.jobs),
             "--latency-samples", str(args.latency_samples), "--output", out.name,
             *(["--postgres"] if postgres else [])],
            check=True, stdout=subprocess.DEVNULL, timeout=args.timeout,
        )  # fmt: skip
        report = json.loads(Path(out.name).read_text())
    run, latency = report["throughput"][0], report.get("latency") or {}
    if run.get("status") != "ok" or latency.get("status", "ok") != "ok":
        raise RuntimeError(f"netdist run did not finish: {run.get('status')} / {latency.get('status')}")
    return {
        "jobs_per_s": run["jobs_per_s"],
        "rtt_p50_ms": latency.get("rtt_p50_ms"),
        "rtt_p99_ms": latency.get("rtt_p99_ms"),
        "dispatch_p50_ms": latency.get("lat_p50_ms"),
        "dispatch_p99_ms": latency.get("lat_p99_ms"),
        "version": report["machine"]["netdist"],
    }


def run_peer(args: argparse.Namespace, script: str) -> dict[str, Any]:
    done = subprocess.run(
        [args.peers_python, str(BENCH_DIR / "peers" / script), "--jobs", str(args.jobs),
         "--latency-samples", str(args.latency_samples), "--workers", "2", "--timeout", str(args.timeout)],
        check=False, capture_output=True, text=True, timeout=args.timeout + 120, cwd=BENCH_DIR / "peers",
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def summarize(rounds: list[dict[str, dict[str, Any]]], systems: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in systems:
        runs = [r[name] for r in rounds if name in r]
        summary[name] = {
            key: median([run[key] for run in runs if run.get(key) is not None])
            for key in ("jobs_per_s", "rtt_p50_ms", "rtt_p99_ms", "dispatch_p50_ms", "dispatch_p99_ms")
        }
        summary[name]["version"] = runs[0].get("version") if runs else None
    for name in systems[1:]:
        if name.startswith("netdist"):
            continue
        per_round = [r["netdist"]["jobs_per_s"] / r[name]["jobs_per_s"] for r in rounds if name in r]
        rtt = [r[name]["rtt_p50_ms"] / r["netdist"]["rtt_p50_ms"] for r in rounds if name in r]
        summary[f"netdist_vs_{name}"] = {
            "throughput_ratio_per_round": [round(x, 2) for x in per_round],
            "throughput_ratio": median(per_round),
            "rtt_p50_ratio_peer_over_netdist": median(rtt),
        }
    return summary


def print_table(summary: dict[str, Any], systems: list[str], rounds: int, args: argparse.Namespace) -> None:
    table = Table(
        title=f"{args.jobs:,} no-op jobs with 2 worker processes, and single-job round trips "
        f"({args.latency_samples} samples); median of {rounds} interleaved round(s)"
    )
    for col in ("system", "version", "jobs/s", "round trip p50 ms", "p99 ms", "netdist ÷ it (jobs/s)", "per round"):
        table.add_column(col, justify="right")
    for name in systems:
        s = summary[name]
        ratio = summary.get(f"netdist_vs_{name}", {})
        table.add_row(
            name,
            str(s["version"]),
            f"{s['jobs_per_s']:,.0f}" if s["jobs_per_s"] else "-",
            f"{s['rtt_p50_ms']}",
            f"{s['rtt_p99_ms']}",
            f"{ratio['throughput_ratio']}x" if ratio else "",
            " ".join(f"{x}x" for x in ratio.get("throughput_ratio_per_round", [])),
        )
    console.print(table)
    for name in (n for n in systems if n.startswith("netdist")):
        nd = summary[name]
        console.print(
            f"{name} dispatch (enqueue -> process starts): p50 {nd['dispatch_p50_ms']} ms,"
            f" p99 {nd['dispatch_p99_ms']} ms"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3: a median of three)")
    p.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per throughput run (default 20000)")
    p.add_argument("--latency-samples", type=int, default=300, help="round trips timed (default 300)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run (default 300)")
    p.add_argument("--peers-python", default=str(BENCH_DIR / ".peers-venv" / "bin" / "python"))
    p.add_argument("--only", choices=["ray", "celery"], action="append", help="run only these peers")
    p.add_argument("--no-postgres", action="store_true", help="leave out netdist on PostgreSQL (netdist-pg)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "peers.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.peers_python = str(Path(args.peers_python).absolute())  # the peers run with bench/peers as their cwd
    wanted = args.only or ["ray", "celery"]
    systems = ["netdist", *(name for name in ("ray", "celery") if name in wanted)]
    if "celery" in systems and shutil.which("redis-server") is None:
        console.print("[yellow]Celery skipped: no redis-server on PATH (apt-get install redis-server)[/]")
        systems.remove("celery")
    if not args.no_postgres:
        ready = shutil.which("pg_isready") and subprocess.run(["pg_isready", "-q"], check=False).returncode == 0
        if ready and shutil.which("createdb"):
            systems.insert(1, "netdist-pg")
        else:
            console.print("[yellow]netdist on PostgreSQL skipped: no PostgreSQL answers on the unix socket[/]")
    rounds: list[dict[str, dict[str, Any]]] = []
    for n in range(args.rounds):
        results: dict[str, dict[str, Any]] = {}
        for name in systems:
            console.print(f"round {n + 1}/{args.rounds}: {name} ...")
            if name.startswith("netdist"):
                results[name] = run_netdist(args, postgres=name == "netdist-pg")
            else:
                results[name] = run_peer(args, f"{name}_noop.py")
            console.print(
                f"  {results[name]['jobs_per_s']:,.0f} jobs/s, round trip p50 {results[name]['rtt_p50_ms']} ms"
            )
        rounds.append(results)
    summary = summarize(rounds, systems)
    print_table(summary, systems, len(rounds), args)
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg": os.getloadavg(),
        "cores": os.cpu_count(),
        "jobs": args.jobs,
        "latency_samples": args.latency_samples,
        "rounds": rounds,
        "summary": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
