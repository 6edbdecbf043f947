"""Celery's side of ``make bench-peers``: no-op tasks through a private redis-server, results on.

This file is both the Celery app (the worker imports it as ``celery_noop``) and the runner: it starts
redis-server on a free loopback port without persistence, a prefork worker with N processes, times the
two workloads, and stops both. Throughput sends every task and then waits for every result
(``ResultSet.join_native``); the round trip is ``noop.delay(None).get()``, one at a time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import celery
from celery import Celery
from celery.result import ResultSet
from peer_common import measure, parse_args, report

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("celery_noop", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(task_ignore_result=False, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def noop(x: object) -> object:
    return x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    args = parse_args(__doc__ or "")
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        worker = None
        try:
            env = {**os.environ, "BENCH_REDIS_URL": url, "PYTHONPATH": str(here)}
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "--pool", "prefork",
                 "--concurrency", str(args.workers), "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "--loglevel", "WARNING"],
                env=env, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            app.conf.update(broker_url=url, result_backend=url)
            deadline = time.monotonic() + 60
            while True:  # the first task answers once redis and the worker are up
                try:
                    noop.delay(None).get(timeout=2)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            result = measure(
                args,
                run_batch=lambda n: ResultSet([noop.delay({"i": i}) for i in range(n)]).join_native(
                    timeout=args.timeout
                ),
                round_trip=lambda: noop.delay(None).get(timeout=args.timeout),
            )
            result["version"] = celery.__version__
            report(result)
        finally:
            if worker is not None:
                _stop(worker)
            _stop(redis)


if __name__ == "__main__":
    main()
