"""Scale figures on a real server (SQLite, synchronous=FULL) and 2 real worker processes of 1 slot.

    .venv/bin/python bench/scale.py handlers [--handlers 100] [--jobs 600000]
    .venv/bin/python bench/scale.py million [--jobs 1000000] [--keep 10000] [--rounds 3]
    .venv/bin/python bench/scale.py payload [--kib 1024] [--jobs 300]

(The fourth, idle worker streams, is bench/idle_streams.py.)

- ``handlers``: ``--jobs`` no-op jobs through one ``Noop`` handler, then the same number split over
  ``--handlers`` handlers (added without auto-start, then started by 8 admin calls at a time, and the
  workers connected once all run), each on a fresh server. Throughput of each (first enqueue, or the
  workers' start, to last result), and the throughput and fair share while all run: the admin API's
  processed counts are sampled every half second; over the window when every handler has processed a
  result and none has finished, the jobs done per second, and each handler's share of them compared with
  an equal share (the largest deviation, and Jain's index: 1.0 is perfectly fair). The workers come
  last because a handler started later does not catch up on the time it did not run: with workers from
  the start, the first handlers finished before the last ones had started, and no such window was left.
- ``million``: ``--jobs`` no-op jobs through one handler on a server that keeps only the newest ``--keep``
  processed jobs per handler (``--keep-processed``, a retention pass every 5 s, within a second while passes
  keep deleting). The handler stamps every 100,000th result: the rate over each 100,000 (the first from the
  first enqueue), and the store's size on disk (database, WAL and shared memory) sampled every second: at
  100,000 and at the end, and its peak. Each of
  ``--rounds`` runs on a fresh server; the medians over them are the figures. On this shared 2-core machine
  one 100,000 (4-5 s) moves by up to 30% within a run, with no trend, so one run's last over first says more
  about the machine than about netdist. ``line_last_over_first`` is the same ratio read off a least-squares
  line through all ten.
- ``payload``: ``--jobs`` jobs whose input carries ``--kib`` KiB and whose output returns it (the script
  returns its input), so each job moves the payload twice: MB/s end to end, input and output together.
  Raw gRPC on the same machine is the yardstick: bench/raw_echo.py (a grpc.aio server echoing bytes), called
  with the same payload from 2 threads (as many as workers), the same number of times.

Each run prints its figures as JSON and writes them to bench/results/scale_<kind>.json. Nothing is asserted:
the goals are in issue 11 and bench/README.md. Stopped by Ctrl-C or SIGTERM, every process it started stops.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from netdist.api.v1 import admin_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noop_package import noop_script
from raw_echo import METHOD, OPTIONS
from throughput import Cluster, _summary, _wait_handler, cluster, machine_facts, reap_strays

BENCH_DIR = Path(__file__).resolve().parent
WORKERS, SLOTS = 2, 1
SAMPLE_SECONDS = 0.5
START_CALLS = 8
"""Handlers started at once (one admin call each), as an operator's script would."""
MARK_EVERY = 100_000


def started_cluster(c: Cluster) -> Cluster:
    c.start_workers(WORKERS, SLOTS)
    c.wait_workers(WORKERS, 60)
    return c


def progress(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def rate(jobs: int, s: dict[str, Any]) -> float | None:
    first, last = s.get("t_first_enqueue"), s.get("t_last_result")
    return round(jobs / (last - first), 1) if first and last and last > first else None


# -- handlers -----------------------------------------------------------------------------------------------


def run_handlers(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"handlers": args.handlers, "jobs": args.jobs}
    with cluster(workdir, "one-handler") as c:
        started_cluster(c)
        hid = c.api.add_script("one.py", noop_script(job="one", count=args.jobs, batch=2000, warmup=100)).handler.id
        state, info = _wait_handler(c, hid, args.timeout)
        out["one_handler"] = {"status": state, "jobs_per_s": rate(args.jobs, _summary(info))}
        progress(f"one handler: {out['one_handler']}")
    each = args.jobs // args.handlers
    with cluster(workdir, "many-handlers") as c:
        adding = time.monotonic()
        ids = [
            c.api.add_script(
                f"h{n}.py",
                noop_script(job=f"h{n}", count=each, batch=min(2000, each), warmup=0, auto_start=False),
            ).handler.id
            for n in range(args.handlers)
        ]
        added_in = time.monotonic() - adding
        starting = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(START_CALLS) as pool:
            list(pool.map(lambda hid: start_handler(c, hid), ids))
        started_in = time.monotonic() - starting
        progress(f"{args.handlers} handlers added in {added_in:.1f} s, started in {started_in:.1f} s")
        started_cluster(c)  # the workers come once all run: every handler takes turns from the first job
        workers_at = time.time()
        samples = sample_until_finished(c, set(ids), args.timeout)
        infos = {h.id: h for h in c.api.handlers() if h.id in ids}
    summaries = [_summary(infos[hid]) for hid in ids if hid in infos]
    firsts = [s["t_first_enqueue"] for s in summaries if s.get("t_first_enqueue")]
    lasts = [s["t_last_result"] for s in summaries if s.get("t_last_result")]
    many: dict[str, Any] = {
        "status": "ok" if all(infos[h].state == "finished" for h in ids if h in infos) else "not all finished",
        "jobs_per_s": (
            round(each * len(lasts) / (max(lasts) - max(min(firsts), workers_at)), 1) if firsts and lasts else None
        ),
        "add_all_seconds": round(added_in, 2),
        "start_all_seconds": round(started_in, 2),
    }
    many.update(fairness(samples, ids))
    out["many_handlers"] = many
    one = out["one_handler"]["jobs_per_s"]
    if one and many["jobs_per_s"]:
        out["many_over_one"] = round(many["jobs_per_s"] / one, 3)
    if one and many.get("fair_window_jobs_per_s"):
        out["all_running_over_one"] = round(many["fair_window_jobs_per_s"] / one, 3)
    return out


def start_handler(c: Cluster, hid: str) -> None:
    c.api.admin.ControlHandler(
        admin_pb2.ControlHandlerRequest(ref=hid, action=admin_pb2.HANDLER_ACTION_START), timeout=60
    )


def sample_until_finished(c: Cluster, ids: set[str], timeout: float) -> list[tuple[float, dict[str, tuple[str, int]]]]:
    """(time, {handler id: (state, jobs processed)}) every SAMPLE_SECONDS until all are finished."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.check_alive()
        now = time.time()
        seen = {h.id: (h.state, h.jobs_processed) for h in c.api.handlers(running=False) if h.id in ids}
        samples.append((now, seen))
        if len(samples) % 10 == 0:
            states = sorted({state for state, _ in seen.values()})
            progress(f"{sum(done for _, done in seen.values())} jobs processed; handlers {', '.join(states)}")
        if len(seen) == len(ids) and all(state in ("finished", "failed") for state, _ in seen.values()):
            break
        time.sleep(SAMPLE_SECONDS)
    return samples


def fairness(samples: list[tuple[float, dict[str, tuple[str, int]]]], ids: list[str]) -> dict[str, Any]:
    """Shares over the longest window where every handler had started (done > 0) and none had finished."""
    window = [
        (t, seen)
        for t, seen in samples
        if len(seen) == len(ids) and all(state == "running" for state, _ in seen.values())
    ]
    started = [(t, seen) for t, seen in window if all(done > 0 for _, done in seen.values())]
    if len(started) < 2:
        return {"fair_window_s": 0.0, "note": "no window with every handler running and none finished"}
    (t0, a), (t1, b) = started[0], started[-1]
    shares = [b[h][1] - a[h][1] for h in ids]
    total = sum(shares)
    if total <= 0:
        return {"fair_window_s": round(t1 - t0, 2), "note": "no jobs done in the window"}
    mean = total / len(shares)
    jain = total**2 / (len(shares) * sum(x * x for x in shares))
    return {
        "fair_window_s": round(t1 - t0, 2),
        "fair_window_jobs": total,
        "fair_window_jobs_per_s": round(total / (t1 - t0), 1),
        "share_min_max_over_mean": [round(min(shares) / mean, 3), round(max(shares) / mean, 3)],
        "share_worst_deviation": round(max(abs(x / mean - 1) for x in shares), 3),
        "jain_index": round(jain, 4),
    }


# -- a million ----------------------------------------------------------------------------------------------


def store_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("netdist.db*") if p.is_file())


def run_million(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``--rounds`` runs, each on a fresh server; the figures of each, and the median of their ratios."""
    rounds = [million_round(workdir / f"round{n}", args) for n in range(1, args.rounds + 1)]
    out: dict[str, Any] = {"jobs": args.jobs, "keep_processed": args.keep, "rounds": rounds}
    for key in ("last_over_first", "line_last_over_first", "jobs_per_s"):
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            out[f"{key}_each"] = values
            out[f"{key}_median"] = round(statistics.median(values), 3)
    peaks = [r["store_mb_peak"] for r in rounds if r.get("store_mb_peak") is not None]
    out["store_mb_peak"] = max(peaks) if peaks else None
    return out


def million_round(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    retention = ("--keep-processed", str(args.keep), "--retention-interval", "5")
    with cluster(workdir, "million", server_args=retention) as c:
        started_cluster(c)
        script = noop_script(job="million", count=args.jobs, batch=2000, warmup=100, mark_every=MARK_EVERY)
        hid = c.api.add_script("million.py", script).handler.id
        sizes: list[tuple[int, int]] = []  # (processed, bytes on disk)
        deadline = time.monotonic() + args.timeout
        info = c.api.handler(hid)
        while info.state not in ("finished", "failed") and time.monotonic() < deadline:
            c.check_alive()
            sizes.append((info.jobs_processed, store_bytes(c.root / "data")))
            time.sleep(1.0)
            info = c.api.handler(hid)
        sizes.append((info.jobs_processed, store_bytes(c.root / "data")))
        out["status"] = info.state if info.state in ("finished", "failed") else "timed out"
        s = _summary(info)
    marks = [s.get("t_first_enqueue"), *(s.get("marks") or [])]
    if len(marks) >= 3 and marks[0]:
        first, last = marks[1] - marks[0], marks[-1] - marks[-2]
        out["first_100k_jobs_per_s"] = round(MARK_EVERY / first, 1)
        out["last_100k_jobs_per_s"] = round(MARK_EVERY / last, 1)
        out["last_over_first"] = round(first / last, 3)
        each = [MARK_EVERY / (b - a) for a, b in itertools.pairwise(marks)]
        out["each_100k_jobs_per_s"] = [round(r) for r in each]
        out["line_last_over_first"] = line_last_over_first(each)
    out["jobs_per_s"] = rate(args.jobs, s)
    near = min(sizes, key=lambda ps: abs(ps[0] - MARK_EVERY)) if sizes else (0, 0)
    out["store_mb_at_100k"] = round(near[1] / 1e6, 1)
    out["store_mb_at_end"] = round(sizes[-1][1] / 1e6, 1) if sizes else None
    out["store_mb_peak"] = round(max(b for _, b in sizes) / 1e6, 1) if sizes else None
    return out


def line_last_over_first(rates: list[float]) -> float | None:
    """The least-squares line through every 100,000's rate, at the last over at the first: the trend the goal
    asks about, from all of them rather than two windows of a few seconds each."""
    if len(rates) < 2:
        return None
    slope, intercept = statistics.linear_regression(range(len(rates)), rates)
    return round((intercept + slope * (len(rates) - 1)) / intercept, 3) if intercept > 0 else None


# -- payload ------------------------------------------------------------------------------------------------


def run_payload(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    size = args.kib * 1024
    pad = size - 40  # the rest of the JSON: {"i": n, "pad": "..."}
    out: dict[str, Any] = {"jobs": args.jobs, "payload_kib": args.kib, "moved_per_job_mb": round(2 * size / 1e6, 3)}
    with cluster(workdir, "payload") as c:
        started_cluster(c)
        script = noop_script(job="payload", count=args.jobs, batch=args.batch, warmup=4, payload_bytes=pad)
        hid = c.api.add_script("payload.py", script).handler.id
        state, info = _wait_handler(c, hid, args.timeout)
        s = _summary(info)
    jobs_per_s = rate(args.jobs, s)
    out["netdist"] = {
        "status": state,
        "jobs_per_s": jobs_per_s,
        "mb_per_s": round(jobs_per_s * 2 * size / 1e6, 1) if jobs_per_s else None,
    }
    out["raw_grpc"] = raw_echo(size, args.jobs)
    if out["netdist"]["mb_per_s"] and out["raw_grpc"]["mb_per_s"]:
        out["netdist_over_raw"] = round(out["netdist"]["mb_per_s"] / out["raw_grpc"]["mb_per_s"], 3)
    return out


def raw_echo(size: int, calls: int) -> dict[str, Any]:
    """``calls`` echo calls of ``size`` bytes from WORKERS threads to bench/raw_echo.py; MB/s both ways."""
    server = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "raw_echo.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
            echo = channel.unary_unary(METHOD)
            payload = os.urandom(size)
            for _ in range(4):  # warm-up, as netdist's handler has
                echo(payload, timeout=30)
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
                answers = list(pool.map(lambda _: len(echo(payload, timeout=30)), range(calls)))
            seconds = time.perf_counter() - start
        assert all(n == size for n in answers)
        return {"calls_per_s": round(calls / seconds, 1), "mb_per_s": round(calls * 2 * size / seconds / 1e6, 1)}
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


# -- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", required=True)
    h = kinds.add_parser("handlers", help="many handlers at once against one")
    h.add_argument("--handlers", type=int, default=100)
    # 600,000: a window of 20-25 s while all run. A handler's first results reach it up to a second after the
    # others' (its batches start at one result and grow fourfold a call), and it catches up inside the window:
    # the shorter the window, the more that counts. At 100,000 jobs the window was 7-9 s (the worst share
    # 4-14% off an equal one over 14 runs); at 300,000 it was 25-30 s while 100 handlers ran at 10,000-15,000
    # jobs/s, and 9-12 s once they ran at 20,000-28,000 (2026-12-06: 5.5-12.6% off in 4 runs, 3.8-5.7% in 3
    # runs of 600,000).
    h.add_argument("--jobs", type=int, default=600_000, help="in all, split evenly over the handlers")
    h.add_argument("--timeout", type=float, default=600.0)
    m = kinds.add_parser("million", help="a million jobs through one handler, processed ones pruned")
    m.add_argument("--jobs", type=int, default=1_000_000)
    m.add_argument("--keep", type=int, default=10_000, help="processed jobs kept per handler (--keep-processed)")
    m.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per round")
    m.add_argument("--rounds", type=int, default=3, help="runs, each on a fresh server (default 3)")
    y = kinds.add_parser("payload", help="large job inputs and outputs against raw gRPC")
    y.add_argument("--kib", type=int, default=1024, help="payload per job, each way")
    y.add_argument("--jobs", type=int, default=300)
    y.add_argument("--batch", type=int, default=10, help="jobs the handler enqueues per call")
    y.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0:
        p.error("--jobs and --timeout must be positive")
    if args.kind == "handlers" and not 1 <= args.handlers <= args.jobs:
        p.error("--handlers must be between 1 and --jobs")
    if args.kind == "million" and args.jobs < 3 * MARK_EVERY:
        p.error(f"--jobs must be at least {3 * MARK_EVERY} (the rates compare the first and last {MARK_EVERY})")
    if args.kind == "payload" and not (1 <= args.kib <= 3 * 1024 and args.batch >= 1):
        p.error("--kib must be between 1 and 3072 (a job's input and output stay under 4 MiB), --batch at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    workdir = Path(tempfile.mkdtemp(prefix="netdist-bench-scale-"))
    report: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    run = {"handlers": run_handlers, "million": run_million, "payload": run_payload}[args.kind]
    try:
        report[args.kind] = run(workdir, args)
    finally:
        reap_strays()
        shutil.rmtree(workdir, ignore_errors=True)
    report["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))
    out = BENCH_DIR / "results" / f"scale_{args.kind}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
