"""First job on a cold worker whose environment holds large dependency wheels, locked from a job script's
PEP 723 dependencies.

    .venv/bin/python bench/cold_environment.py [--mb 50] [--wheels 5] [--rounds 5]

A directory of ``--wheels`` dependency wheels of ``--mb`` MB together (random, incompressible bytes) is
served to the server with ``--find-links``; a job script of the ``Latency`` handler
(bench/noop_package.py) lists them in ``dependencies`` and has one job. Each round starts a worker with an
empty cache, waits until it is connected, then adds the script under a new job name: the server
enqueues the job, leases it to the worker, which fetches every wheel by hash from the server, unpacks
and verifies them, starts a child in that environment and calls ``process``, which returns
``time.time() - t0`` (``t0`` taken by the handler as it enqueued the job, same machine and clock). That
figure covers enqueue to the start of ``process``: the lease and the cold environment, a few ms more than
lease to start. The resolution itself (pip, at ``jobs add``) happens before the job exists and is not in
it; it is printed separately for the first round. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from netdist.testing import Admin, start_server, start_worker, wait_until, write_wheel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noop_package import bench_wheel, latency_script

BENCH_DIR = Path(__file__).resolve().parent


def dependency_wheels(links: Path, *, total_mb: int, count: int) -> list[str]:
    names = []
    size = total_mb * 1024 * 1024 // count
    for n in range(count):
        name = f"bench-dep-{n}"
        module = name.replace("-", "_")
        write_wheel(
            links,
            name=name,
            version="1.0",
            files={f"{module}/__init__.py": "", f"{module}/blob.bin": os.urandom(size)},
        )
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50, help="MB of dependency wheels in the environment")
    parser.add_argument("--wheels", type=int, default=5, help="how many wheels they are split into")
    parser.add_argument("--rounds", type=int, default=5, help="cold workers, one job each")
    parser.add_argument(
        "--uploaded", action="store_true", help="baseline: upload the wheels with the package instead of locking them"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="netdist-bench-cold-"))
    server = None
    workers = []
    try:
        links = root / "links"
        deps = dependency_wheels(links, total_mb=args.mb, count=args.wheels)
        server = start_server(root / "data", log_dir=root / "logs", extra_args=["--find-links", str(links)])
        admin = Admin(server.address)
        extra = sorted(links.glob("*.whl")) if args.uploaded else []
        admin.upload(bench_wheel(root / "pkg"), *extra)
        samples, resolve_seconds = [], None
        for r in range(args.rounds):
            name = f"cold-{r}"
            worker = start_worker(server.address, name=name, log_dir=root / "logs", cache_dir=root / "cache" / name)
            workers.append(worker)

            def connected(n: str = name) -> bool:
                return any(w.name == n and w.connected for w in admin.workers())

            wait_until(connected, 30, what=f"worker {name}")
            text = latency_script(job=name, samples=1, warmup=0)
            if not args.uploaded:
                text = text.replace("# [tool.netdist]", f"# dependencies = {json.dumps(deps)}\n# [tool.netdist]", 1)
            start = time.monotonic()
            admin.add_script(root / f"{name}.py", text)
            resolve_seconds = resolve_seconds if resolve_seconds is not None else time.monotonic() - start
            h = admin.wait_state(name, "finished", timeout=120)
            samples.append(json.loads(h.result_summary)["lat_p50"])
            worker.stop()
        report = {
            "how": "uploaded with the package" if args.uploaded else "locked from dependencies",
            "mb": args.mb,
            "wheels": args.wheels,
            "first_job_ms": [round(s * 1000, 1) for s in samples],
            "median_ms": round(statistics.median(samples) * 1000, 1),
            "first_jobs_add_with_resolution_s": round(resolve_seconds or 0.0, 2),
            "load_average": os.getloadavg()[0],
        }
        print(json.dumps(report, indent=2))
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        out = BENCH_DIR / "results" / f"cold_environment{'_uploaded' if args.uploaded else ''}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        for w in workers:
            if w.alive():
                w.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
