"""Throughput and dispatch latency of no-op jobs on a real server and real workers.

    .venv/bin/python bench/throughput.py [--jobs 20000] [--timeout 120] [--configs 1x1,2x1,4x1,2x2]
                                         [--latency-samples 500] [--profile DIR] [--metrics] [--postgres]

Every run starts its own server (SQLite in a temp dir, loopback only; with
``--postgres`` a fresh database of this machine's PostgreSQL, made with
``createdb`` and dropped after) and its own worker processes, and stops them all
at the end, also on Ctrl-C or error.

Throughput: the ``Noop`` handler (bench/noop_package.py) runs a short warm-up,
then times itself in the server's handler host from its first enqueue to its
last processed result; jobs/s = jobs / that time. Worker and executor start-up
are outside it. Latency: the ``Latency`` handler keeps one job in flight and
measures enqueue -> start of ``process`` on the worker (same clock).

Figures land in a table and in bench/results/latest.json, with the machine's
facts and the load average around each run (other work on the machine makes
them noisy: compare runs from one sitting only).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy
from rich.console import Console
from rich.table import Table

import netdist
from netdist.testing import Admin, Process, ServerProcess, start_server, start_worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noop_package import bench_wheel, latency_script, noop_script

BENCH_DIR = Path(__file__).resolve().parent
WORKERS_TIMEOUT = 60.0
POLL_SECONDS = 0.2
STOP_SECONDS = 15.0
console = Console(width=None if sys.stdout.isatty() else 150)


# -- processes ----------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _descendants(root: int) -> list[int]:
    """Living descendants of ``root`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
                children.setdefault(int(stat[1]), []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 10_000:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, its living descendants and its reaped children."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    for index, p in enumerate([pid, *_descendants(pid)]):
        stat = _proc_stat(p)
        if stat is not None:
            fields = stat[11:15] if index == 0 else stat[11:13]  # utime stime (cutime cstime)
            total += sum(int(f) for f in fields) / ticks
    return total


class Scraper:
    """Scrapes the server's metrics every ``interval`` seconds on a thread, as Prometheus would, until stopped."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url, self.interval = url, interval
        self.scrapes, self.failures, self.seconds = 0, 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    answer.read()
                self.scrapes += 1
            except OSError:
                self.failures += 1
            self.seconds += time.perf_counter() - t0

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(15)
        mean_ms = round(1000 * self.seconds / max(1, self.scrapes + self.failures), 1)
        return {"scrapes": self.scrapes, "failures": self.failures, "mean_ms": mean_ms}


class Cluster:
    """One server and its workers in a temp dir; ``close`` stops every process it started."""

    def __init__(
        self, root: Path, *, metrics: bool = False, postgres: bool = False, server_args: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.metrics = metrics
        self.server_args = server_args
        self.database = f"netdist_bench_{os.getpid()}_{root.name.replace('-', '_')}" if postgres else ""
        self.processes: list[Process] = []
        self.server: ServerProcess | None = None
        self.admin: Admin | None = None
        self.scraper: Scraper | None = None
        self.address = ""

    def start_server(self) -> None:
        extra = [*self.server_args, *(["--metrics-port", "0"] if self.metrics else [])]
        db_url = None
        if self.database:  # a fresh database of this machine's PostgreSQL (unix socket), dropped at close
            subprocess.run(["createdb", self.database], check=True, capture_output=True, timeout=60)
            db_url = f"postgresql+psycopg:///{self.database}"
        server = start_server(self.root / "data", log_dir=self.root / "logs", db_url=db_url, extra_args=extra)
        self.processes.append(server)
        self.server, self.address = server, server.address
        self.admin = Admin(server.address)
        if self.metrics:
            found = re.search(r"metrics on (http://\S+/metrics)", server.output())
            if found is None:
                raise RuntimeError(f"the server printed no metrics address:\n{server.output()[-3000:]}")
            self.scraper = Scraper(found.group(1))

    def start_workers(self, count: int, slots: int) -> list[Process]:
        started = []
        for n in range(count):
            name = f"w{n + 1}"
            worker = start_worker(
                self.address,
                name=name,
                log_dir=self.root / "logs",
                cache_dir=self.root / "cache" / name,
                slots=slots,
                extra_args=["--grace", "5"],
            )
            self.processes.append(worker)
            started.append(worker)
        return started

    def wait_workers(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if sum(w.connected for w in self.api.workers()) >= count:
                return
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"{count} worker(s) did not connect within {timeout:g} s")

    @property
    def api(self) -> Admin:
        assert self.admin is not None
        return self.admin

    def check_alive(self) -> None:
        for proc in self.processes:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output()[-3000:]}")

    def close(self) -> None:
        if self.scraper is not None:
            self.scraper.stop()
        if self.admin is not None:
            with contextlib.suppress(Exception):
                self.admin.close()
        workers = [p for p in self.processes if p is not self.server]
        stop_all(workers)
        if self.server is not None:
            stop_all([self.server])
        if self.database:
            subprocess.run(["dropdb", "--if-exists", self.database], check=False, capture_output=True, timeout=60)


def stop_all(processes: list[Process], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM all, wait for all within one deadline, SIGKILL the rest."""
    for proc in processes:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.print(f"[yellow]{proc.name} did not stop in {timeout:g} s; killing it[/]")
            proc.kill()


def reap_strays() -> None:
    """Last resort: stop any descendant of this process still alive (by pid)."""
    strays = _descendants(os.getpid())
    for pid in strays:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in strays):
        time.sleep(0.1)
    for pid in strays:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


@contextlib.contextmanager
def cluster(
    workdir: Path, name: str, *, metrics: bool = False, postgres: bool = False, server_args: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    c = Cluster(workdir / name, metrics=metrics, postgres=postgres, server_args=server_args)
    try:
        c.start_server()
        c.api.upload(bench_wheel(workdir / "wheels"))
        yield c
    finally:
        c.close()


# -- profiling (optional) ----------------------------------------------------------------------------


@dataclasses.dataclass
class Profiler:
    """py-spy record of one process tree, stopped with SIGINT when the run ends."""

    popen: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def start(cls, pid: int, output: Path, seconds: float) -> Profiler | None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            console.print("[yellow]py-spy not found (pip install py-spy); no profile[/]")
            return None
        output.parent.mkdir(parents=True, exist_ok=True)
        args = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--gil",
            "--rate",
            "200",
            "--format",
            "raw",
            "--duration",
            str(int(seconds)),
            "--output",
            str(output),
        ]
        log = output.with_suffix(".log").open("wb")
        popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return cls(popen, output)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def top_frames(collapsed: Path, limit: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive share of samples per function from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return {"self": [], "inclusive": []}

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:limit]]

    return {"samples": [("total", float(total))], "self": share(own), "inclusive": share(inclusive)}


# -- runs ---------------------------------------------------------------------------------------------


def _summary(info: Any) -> dict[str, Any]:
    try:
        value = json.loads(info.result_summary or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _wait_handler(c: Cluster, ref: str, timeout: float) -> tuple[str, Any]:
    """Poll until the handler is finished or failed, or the time is up."""
    deadline = time.monotonic() + timeout
    info = c.api.handler(ref)
    while info.state not in ("finished", "failed") and time.monotonic() < deadline:
        c.check_alive()
        time.sleep(POLL_SECONDS)
        info = c.api.handler(ref)
    if info.state in ("finished", "failed"):
        return info.state, info
    return "timed out", info


def run_throughput(workdir: Path, args: argparse.Namespace, workers: int, slots: int) -> dict[str, Any]:
    label = f"{workers}x{slots}"
    out: dict[str, Any] = {"config": label, "workers": workers, "slots": slots, "jobs": args.jobs}
    console.print(f"[bold]throughput {label}[/]: {workers} worker process(es) x {slots} slot(s), {args.jobs} jobs")
    with cluster(workdir, f"tp-{label}", metrics=args.metrics, postgres=args.postgres) as c:
        procs = c.start_workers(workers, slots)
        c.wait_workers(workers, WORKERS_TIMEOUT)
        assert c.server is not None
        cpu0 = {"server": cpu_seconds(c.server.popen.pid), "workers": sum(cpu_seconds(p.popen.pid) for p in procs)}
        load0 = os.getloadavg()
        profilers: dict[str, Profiler | None] = {}
        if args.profile and label == args.profile_config:
            for role, pid in (("server", c.server.popen.pid), ("worker", procs[0].popen.pid)):
                profilers[role] = Profiler.start(pid, Path(args.profile) / f"{role}-{label}.txt", args.timeout)
        t0 = time.time()
        script = noop_script(job=f"noop-{label}", count=args.jobs, batch=args.batch, warmup=args.warmup)
        hid = c.api.add_script(f"noop-{label}.py", script).handler.id
        try:
            state, info = _wait_handler(c, hid, args.timeout)
        finally:
            for profiler in profilers.values():
                if profiler is not None:
                    profiler.stop()
        out["client_seconds"] = round(time.time() - t0, 3)
        out["cpu_seconds"] = {
            "server": round(cpu_seconds(c.server.popen.pid) - cpu0["server"], 2),
            "workers": round(sum(cpu_seconds(p.popen.pid) for p in procs) - cpu0["workers"], 2),
        }
        out["loadavg_1m"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
        s = _summary(info)
        out["status"] = "ok" if state == "finished" else state
        if state == "failed":
            out["status"] = f"failed: {info.message}"
        if profilers:
            out["profiles"] = {r: str(p.output) for r, p in profilers.items() if p is not None and p.output.exists()}
        if c.scraper is not None:
            out["metrics"] = c.scraper.stop()
    _throughput_figures(out, s)
    return out


def _throughput_figures(out: dict[str, Any], s: dict[str, Any]) -> None:
    first, last, first_result = s.get("t_first_enqueue"), s.get("t_last_result"), s.get("t_first_result")
    out["processed"] = s.get("seen", 0)
    if out["status"] == "ok" and first and last and last > first:
        seconds = last - first
        out["seconds"] = round(seconds, 3)
        out["jobs_per_s"] = round(out["jobs"] / seconds, 1)
        if first_result and last > first_result:
            out["steady_jobs_per_s"] = round((out["jobs"] - 1) / (last - first_result), 1)
            out["first_result_ms"] = round(1000 * (first_result - first), 1)
    elif first and out["processed"]:
        out["partial_jobs_per_s"] = round(out["processed"] / max(1e-9, time.time() - first), 1)


def run_latency(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": args.latency_samples, "workers": 1, "slots": 1}
    console.print(f"[bold]latency[/]: 1 worker x 1 slot, one job in flight, {args.latency_samples} samples")
    with cluster(workdir, "latency", metrics=args.metrics, postgres=args.postgres) as c:
        c.start_workers(1, 1)
        c.wait_workers(1, WORKERS_TIMEOUT)
        load0 = os.getloadavg()
        hid = c.api.add_script(
            "latency.py", latency_script(job="latency", samples=args.latency_samples, warmup=20)
        ).handler.id
        state, info = _wait_handler(c, hid, args.timeout)
        out["loadavg_1m"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
        out["status"] = "ok" if state == "finished" else (f"failed: {info.message}" if state == "failed" else state)
        s = _summary(info)
    out["measured"] = s.get("n", 0)
    for key in ("lat_p50", "lat_p90", "lat_p99", "lat_p100", "lat_mean", "rtt_p50", "rtt_p99"):
        if s.get(key) is not None:
            out[key.replace("p100", "max") + "_ms"] = round(1000 * s[key], 2)
    return out


# -- report -----------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": cores,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "grpcio": grpc.__version__,
        "netdist": netdist.__version__,
        "git": _git_head(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _git_head() -> str:
    with contextlib.suppress(Exception):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=BENCH_DIR,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False,
            capture_output=True,
            text=True,
            cwd=BENCH_DIR,
            timeout=5,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    return ""


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    console.print(
        f"\n[bold]machine[/]: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}, grpcio {m['grpcio']}, netdist {m['netdist']} ({m['git']})"
    )
    table = Table(
        title=f"no-op jobs, end to end (first enqueue -> last result processed), {report['jobs']} jobs,"
        f" {report['store']}"
    )
    for col in (
        "workers x slots",
        "status",
        "jobs/s",
        "steady jobs/s",
        "seconds",
        "cpu s server/workers",
        "load 1m",
    ):
        table.add_column(col, justify="right")
    for r in report["throughput"]:
        rate = (
            f"{r['jobs_per_s']:,.0f}"
            if "jobs_per_s" in r
            else (f"({r['partial_jobs_per_s']:,.0f})" if "partial_jobs_per_s" in r else "-")
        )
        cpu = r.get("cpu_seconds", {})
        table.add_row(
            r["config"],
            r["status"],
            rate,
            f"{r.get('steady_jobs_per_s', 0):,.0f}",
            f"{r.get('seconds', 0):.1f}",
            f"{cpu.get('server', 0):.1f} / {cpu.get('workers', 0):.1f}",
            "{} -> {}".format(*r.get("loadavg_1m", ["?", "?"])),
        )
    console.print(table)
    console.print("peers (Ray, Celery) in the same sitting: make bench-peers (bench/peers.py)")
    lat = report.get("latency")
    if lat:
        t = Table(title="dispatch latency, enqueue -> start of process() on the worker (one job in flight)")
        for col in ("status", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms", "round trip p50 ms"):
            t.add_column(col, justify="right")
        t.add_row(
            lat["status"],
            str(lat.get("measured", 0)),
            *(
                f"{lat.get(k, float('nan')):.1f}"
                for k in ("lat_p50_ms", "lat_p90_ms", "lat_p99_ms", "lat_max_ms", "rtt_p50_ms")
            ),
        )
        console.print(t)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per throughput run (default 20000)")
    p.add_argument("--timeout", type=float, default=120.0, help="time limit per run in seconds (default 120)")
    p.add_argument(
        "--configs",
        default="1x1,2x1,4x1,2x2",
        help="worker processes x slots per throughput run (default 1x1,2x1,4x1,2x2)",
    )
    p.add_argument("--batch", type=int, default=2000, help="jobs per create_more_jobs call (default 2000)")
    p.add_argument("--warmup", type=int, default=100, help="untimed warm-up jobs before each run (default 100)")
    p.add_argument("--latency-samples", type=int, default=500, help="0 skips the latency run (default 500)")
    p.add_argument("--profile", metavar="DIR", help="py-spy record the server tree during one run into DIR")
    p.add_argument("--profile-config", default="4x1", help="the run to profile (default 4x1)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "latest.json")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    p.add_argument(
        "--metrics",
        action="store_true",
        help="serve metrics (--metrics-port 0) and scrape them every second during each run: their cost",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="store in this machine's PostgreSQL (unix socket; createdb and dropdb a fresh database per run)"
        " instead of SQLite",
    )
    args = p.parse_args(argv)
    try:
        args.config_list = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",") if c]
        assert all(len(c) == 2 and c[0] >= 1 and c[1] >= 1 for c in args.config_list)
    except (ValueError, AssertionError):
        p.error(f"--configs: expected e.g. 1x1,4x1, got {args.configs!r}")
    if args.jobs < 1 or args.timeout <= 0 or args.batch < 1:
        p.error("--jobs, --timeout and --batch must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    workdir = Path(tempfile.mkdtemp(prefix="netdist-bench-"))
    report: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_facts(),
        "jobs": args.jobs,
        "timeout_s": args.timeout,
        "batch": args.batch,
        "warmup": args.warmup,
        "metrics": args.metrics,
        "store": "postgresql" if args.postgres else "sqlite",
        "throughput": [],
    }
    try:
        for workers, slots in args.config_list:
            try:
                report["throughput"].append(run_throughput(workdir, args, workers, slots))
            except (RuntimeError, TimeoutError, grpc.RpcError) as exc:
                report["throughput"].append({"config": f"{workers}x{slots}", "status": f"error: {exc}"[:300]})
            console.print(report["throughput"][-1])
        if args.latency_samples > 0:
            try:
                report["latency"] = run_latency(workdir, args)
            except (RuntimeError, TimeoutError, grpc.RpcError) as exc:
                report["latency"] = {"status": f"error: {exc}"[:300]}
            console.print(report["latency"])
        if args.profile:
            report["profile"] = {
                role: top_frames(Path(path), 15)
                for r in report["throughput"]
                for role, path in r.get("profiles", {}).items()
            }
    finally:
        reap_strays()
        if args.keep:
            console.print(f"logs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
