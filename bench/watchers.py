"""Does watching slow dispatch? The same no-op workload with 0 and with N connected watchers, in one sitting.

    .venv/bin/python bench/watchers.py [--jobs 10000] [--config 2x1] [--watchers 200] [--rounds 2]

Each round runs the throughput workload of bench/throughput.py (its own server,
SQLite in a temp dir, real worker processes) twice: once with no watcher, once
with ``--watchers`` ``AdminService.Watch`` streams open, held by one separate
process (grpc.aio, one channel) that reads every event and does nothing with it
-- idle dashboards. Rounds alternate the order (0 first, then N first) so that
drift of the machine's load favours neither. Reported: jobs/s of each run, the
median of each side, the ratio N/0 of jobs/s and of the server's CPU seconds
(the steadier figure on a shared machine), and the events the watchers received. Written to bench/results/watchers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
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

from netdist.api.v1 import admin_pb2, admin_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noop_package import noop_script
from throughput import (
    BENCH_DIR,
    WORKERS_TIMEOUT,
    _summary,
    _throughput_figures,
    _wait_handler,
    cluster,
    console,
    cpu_seconds,
    machine_facts,
    reap_strays,
)

READY_SECONDS = 60.0


# -- the watchers' process ------------------------------------------------------------------------------


async def _hold(address: str, count: int) -> None:
    """``count`` Watch streams on one channel, each read to the end; 'ready' once every snapshot came."""
    token = os.environ["NETDIST_TOKEN"]
    received = 0
    snapshots = 0
    ready = asyncio.Event()

    async def watch(stub: admin_pb2_grpc.AdminServiceStub) -> None:
        nonlocal received, snapshots
        async for reply in stub.Watch(admin_pb2.WatchRequest(), metadata=(("authorization", f"Bearer {token}"),)):
            if reply.HasField("snapshot"):
                snapshots += 1
                if snapshots == count:
                    ready.set()
            received += len(reply.events)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        tasks = [asyncio.create_task(watch(stub)) for _ in range(count)]
        await ready.wait()
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"events {received}", flush=True)


def start_watchers(address: str, token: str, count: int, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--hold", address, "--watchers", str(count)],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "NETDIST_TOKEN": token},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_SECONDS
    line = proc.stdout.readline()  # blocks until 'ready' (or the process ends)
    if line.strip() != "ready" or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"the watchers did not get their snapshots: {line!r}\n{log.read_text()[-2000:]}")
    return proc


def stop_watchers(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    for line in out.splitlines():
        if line.startswith("events "):
            return int(line.split()[1])
    return -1


# -- one run ------------------------------------------------------------------------------------------


def run(workdir: Path, args: argparse.Namespace, watchers: int, name: str) -> dict[str, Any]:
    workers, slots = args.workers, args.slots
    out: dict[str, Any] = {"watchers": watchers, "config": f"{workers}x{slots}", "jobs": args.jobs}
    console.print(f"[bold]{name}[/]: {workers}x{slots}, {args.jobs} jobs, {watchers} watcher(s)")
    with cluster(workdir, name) as c:
        procs = c.start_workers(workers, slots)
        c.wait_workers(workers, WORKERS_TIMEOUT)
        assert c.server is not None
        holder = None
        if watchers:
            holder = start_watchers(c.address, c.server.admin_token, watchers, workdir / f"{name}-watchers.log")
        try:
            cpu0 = cpu_seconds(c.server.popen.pid)
            load0 = os.getloadavg()
            script = noop_script(job=name, count=args.jobs, batch=args.batch, warmup=args.warmup)
            hid = c.api.add_script(f"{name}.py", script).handler.id
            state, info = _wait_handler(c, hid, args.timeout)
            out["server_cpu_seconds"] = round(cpu_seconds(c.server.popen.pid) - cpu0, 2)
            out["loadavg_1m"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
        finally:
            if holder is not None:
                out["watchers_cpu_seconds"] = round(cpu_seconds(holder.pid), 2)  # on the same cores
                out["events_received"] = stop_watchers(holder)
        out["status"] = "ok" if state == "finished" else state
        del procs
    _throughput_figures(out, _summary(info))
    out.pop("vs_peers", None)
    console.print(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000, help="no-op jobs per run (default 10000)")
    p.add_argument("--config", default="2x1", help="worker processes x slots (default 2x1)")
    p.add_argument("--watchers", type=int, default=200, help="watch streams in the watched runs (default 200)")
    p.add_argument("--rounds", type=int, default=2, help="pairs of runs, 0 and N watchers (default 2)")
    p.add_argument("--timeout", type=float, default=120.0, help="time limit per run in seconds (default 120)")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "watchers.json")
    p.add_argument("--hold", metavar="ADDRESS", help=argparse.SUPPRESS)  # the watchers' process
    args = p.parse_args(argv)
    if args.hold:
        asyncio.run(_hold(args.hold, args.watchers))
        return 0
    args.workers, args.slots = (int(n) for n in args.config.split("x"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    workdir = Path(tempfile.mkdtemp(prefix="netdist-bench-watchers-"))
    runs: list[dict[str, Any]] = []
    try:
        for n in range(args.rounds):
            order = (0, args.watchers) if n % 2 == 0 else (args.watchers, 0)
            for watchers in order:
                runs.append(run(workdir, args, watchers, f"r{n + 1}-w{watchers}"))
    finally:
        reap_strays()
        shutil.rmtree(workdir, ignore_errors=True)
    rates = {w: [r["jobs_per_s"] for r in runs if r["watchers"] == w and "jobs_per_s" in r] for w in (0, args.watchers)}
    report: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "runs": runs,
    }
    if rates[0] and rates[args.watchers]:
        base, watched = statistics.median(rates[0]), statistics.median(rates[args.watchers])
        report["median_jobs_per_s"] = {"0": base, str(args.watchers): watched}
        report["ratio"] = round(watched / base, 3)
        cpu = {
            w: [r["server_cpu_seconds"] for r in runs if r["watchers"] == w and r.get("status") == "ok"] for w in rates
        }
        report["server_cpu_ratio"] = round(statistics.median(cpu[args.watchers]) / statistics.median(cpu[0]), 3)
        console.print(
            f"[bold]{args.watchers} watchers / 0 watchers: {report['ratio']:.3f}[/] "
            f"(median jobs/s {watched:.0f} vs {base:.0f}, {args.rounds} round(s), {args.config}, {args.jobs} jobs); "
            f"server CPU {report['server_cpu_ratio']:.3f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
