"""Many idle worker streams: the server's memory, and what they cost a real worker's throughput.

    .venv/bin/python bench/idle_streams.py [--streams 10000] [--jobs 200000] [--channels 100]

One server (SQLite) and two real workers (``w1``, ``w2``, 1 slot each). The ``Noop`` handler, allowed on
``w1`` and ``w2`` only (``clients-allowed``), runs ``--jobs`` no-op jobs three times: alone, then while a
separate process (bench/idle_holder.py) holds ``--streams`` idle worker streams (each a Hello, a Capacity
of 1 and a heartbeat as often as the server asks, over ``--channels`` connections), then alone again once they are gone. It
reports the server process's RSS (``VmRSS``, the main process; handler hosts are processes of their own)
before and with the streams, how long the streams took to be welcomed, and jobs/s of the three runs: the
ratio with / the mean of the two without. Issue 11's goals: 10,000 streams in at most 1 GB of RSS, and the
real workers within 10% of their figure without them. Results also go to bench/results/idle_streams.json.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput
from noop_package import noop_script

BENCH_DIR = Path(__file__).resolve().parent
ALLOWED = '# clients-allowed = [{ name = "^w[0-9]+$" }]'


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def run_noop(c: throughput.Cluster, name: str, args: argparse.Namespace) -> dict[str, Any]:
    script = noop_script(job=name, count=args.jobs, batch=2000, warmup=100)
    script = script.replace("# auto-start = true", f"# auto-start = true\n{ALLOWED}", 1)
    hid = c.api.add_script(f"{name}.py", script).handler.id
    state, info = throughput._wait_handler(c, hid, args.timeout)
    out: dict[str, Any] = {"run": name, "jobs": args.jobs, "status": "ok" if state == "finished" else state}
    throughput._throughput_figures(out, throughput._summary(info))
    print(f"{name}: {out.get('jobs_per_s')} jobs/s ({out['status']})", flush=True)
    return out


def wait_welcomes(holder: subprocess.Popen[str], streams: int, timeout: float) -> int:
    """How many streams the holder says were welcomed, once all were or ``timeout`` passed."""
    assert holder.stdout is not None
    started, welcomed = time.monotonic(), 0
    while welcomed < streams and time.monotonic() - started < timeout:
        ready, _, _ = select.select([holder.stdout], [], [], 1.0)
        if ready:  # "welcomed N" every 500, and once when every stream is answered
            line = holder.stdout.readline()
            if not line:
                break
            welcomed = int(line.split()[1])
    return welcomed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=10_000)
    p.add_argument("--jobs", type=int, default=200_000)
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run and for the streams")
    p.add_argument(
        "--welcome-timeout", type=float, default=120.0, help="seconds to wait for the streams' Welcomes (default 120)"
    )
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "idle_streams.json")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster in the finally blocks
    workdir = Path(tempfile.mkdtemp(prefix="netdist-idle-"))
    report: dict[str, Any] = {"streams": args.streams, "channels": args.channels, "jobs": args.jobs}
    holder: subprocess.Popen[str] | None = None
    try:
        with throughput.cluster(workdir, "idle") as c:
            assert c.server is not None
            c.start_workers(2, 1)
            c.wait_workers(2, 60)
            server_pid = c.server.popen.pid
            report["rss_mb_before"] = rss_mb(server_pid)
            runs = [run_noop(c, "alone", args)]
            holder = subprocess.Popen(
                [
                    *(sys.executable, str(BENCH_DIR / "idle_holder.py"), c.address, str(c.server.worker_token_file)),
                    *("--streams", str(args.streams), "--channels", str(args.channels)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            started = time.monotonic()
            assert holder.stdout is not None
            welcomed = report["welcomed"] = wait_welcomes(holder, args.streams, args.welcome_timeout)
            report["welcome_seconds"] = round(time.monotonic() - started, 1)
            report["rss_mb_with_streams"] = rss_mb(server_pid)
            print(f"{welcomed} streams welcomed in {report['welcome_seconds']} s", flush=True)
            print(f"server RSS {report['rss_mb_before']} MB -> {report['rss_mb_with_streams']} MB", flush=True)
            runs.append(run_noop(c, "with-streams", args))
            report["rss_mb_after_run"] = rss_mb(server_pid)
            assert holder.stdin is not None
            holder.stdin.close()
            report["holder_end"] = next((x.strip() for x in holder.stdout if x.startswith("ended")), "")[:300]
            holder.wait(timeout=120)
            runs.append(run_noop(c, "alone-again", args))
            report["runs"] = runs
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        throughput.reap_strays()
    rates = [r.get("jobs_per_s") for r in report.get("runs", [])]
    if len(rates) == 3 and all(rates):
        report["ratio_with_over_without"] = round(rates[1] / ((rates[0] + rates[2]) / 2), 3)
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
