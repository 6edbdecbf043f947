"""The store writer's CPU per job on SQLite, step by step, with and without retention.

Every job costs the writer three writes (its insert, its result, its mark as processed), and under
``--keep-processed`` a fourth: retention's delete. A 20,000-job run on the real server moves by more than
one of these costs, and the million (bench/scale.py) cannot tell retention's cost from the machine's
noise. This runs the store's own functions, as the writer calls them, on a real SQLite file (WAL,
synchronous=FULL, the writer's connection), in rounds of ROUND jobs, each step its own transaction:

- ``insert``: ``jobs.reserve_job_ids`` and ``jobs.insert`` (a handler's ``create_more_jobs``);
- ``result``: ``jobs.store_results``, every job succeeded under a lazy lease;
- ``processed``: ``jobs.mark_processed`` (the handler took them);
- ``retention``: ``pruning.newest_past`` and ``pruning.delete_jobs`` with today's ``day_start``, keeping
  the newest ``--keep`` processed jobs (as ``--keep-processed COUNT``).

It prints the CPU per job of each step (the process's, commits included), the total, and the bytes the
process wrote per job, once with retention and once without (a store that grows instead). Then
``scattered_batch_ms``: the CPU of retention deleting one round of a handler's jobs that lie
SCATTERED_AMONG apart, between another handler's that each logged a line (as with many handlers at once):
the delete must seek the batch's own rows, not walk everything in its range.

    .venv/bin/python bench/store_writes.py [--jobs 200000] [--keep 10000]   # --jobs in whole rounds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, literal, select, update

from netdist.server.lease_model import ResultIn, Settlement
from netdist.server.retention import day_start
from netdist.server.states import JobStatus
from netdist.server.store import jobs, pruning
from netdist.server.store.engine import open_engine, writer_connection
from netdist.server.store.schema import handlers, job_log
from netdist.server.store.schema import jobs as jobs_table

ROUND = 2000
HANDLER = "h" * 32  # as long as a real handler id: it is in every row and index entry
WORKER = "w" * 32
SUCCEEDED = JobStatus.SUCCEEDED
SCATTERED_AMONG = 100
"""Another handler's jobs between two of the batch's in ``scattered_batch_ms``."""


def written_bytes() -> int | None:
    """Bytes this process has written to storage so far (Linux), or None."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def insert_round(conn: Connection) -> range:
    ids = jobs.reserve_job_ids(conn, ROUND)
    jobs.insert(conn, HANDLER, ids, [(json.dumps({"i": i}), "null") for i in ids])
    return ids


def prune(conn: Connection, keep: int, today: float) -> None:
    upto = pruning.newest_past(conn, HANDLER, JobStatus.PROCESSED, keep)
    if upto is not None:
        pruning.delete_jobs(
            conn, HANDLER, JobStatus.PROCESSED, finished_before=None, upto_id=upto, batch=ROUND, day_start=today
        )


def run(total: int, keep: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="netdist-store-writes-") as tmp:
        engine = open_engine(f"sqlite:///{tmp}/netdist.db")
        conn = writer_connection(engine)
        conn.execute(handlers.insert().values(
            id=HANDLER, package="p", handler="H", job_name="j", script_sha256="0" * 64, script_source="",
            settings_json="{}", custom_json="{}", state="running", created_at=0.0,
        ))  # fmt: skip
        conn.commit()
        cpu = dict.fromkeys(("insert", "result", "processed", "retention"), 0.0)

        def step(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            started = time.process_time()
            answer = fn(conn, *args)
            conn.commit()
            cpu[name] += time.process_time() - started
            return answer

        today = day_start(time.time())
        bytes_before = written_bytes()
        for _ in range(total // ROUND):
            ids = step("insert", insert_round)
            now = time.time()
            done = [
                Settlement(ResultIn(i, 1, "null", None, 1e-4), HANDLER, WORKER, SUCCEEDED, leased_at=now) for i in ids
            ]
            step("result", jobs.store_results, done, now)
            step("processed", jobs.mark_processed, ids, JobStatus.PROCESSED)
            if keep is not None:
                step("retention", prune, keep, today)
        bytes_after = written_bytes()
        conn.close()
        engine.dispose()
        size = sum(p.stat().st_size for p in Path(tmp).glob("netdist.db*"))
    out: dict[str, Any] = {
        f"{k}_us_per_job": round(v / total * 1e6, 2) for k, v in cpu.items() if keep is not None or k != "retention"
    }
    out["total_us_per_job"] = round(sum(cpu.values()) / total * 1e6, 2)
    if bytes_before is not None and bytes_after is not None:
        out["written_bytes_per_job"] = round((bytes_after - bytes_before) / total)
    out["store_mb"] = round(size / 1e6, 1)
    return out


def scattered_batch_ms(others_per_job: int) -> float:
    """CPU ms of retention deleting one ROUND of a handler's jobs that lie ``others_per_job`` apart,
    between another handler's processed jobs, each of which logged a line (many handlers at once)."""
    with tempfile.TemporaryDirectory(prefix="netdist-store-writes-") as tmp:
        engine = open_engine(f"sqlite:///{tmp}/netdist.db")
        conn = writer_connection(engine)
        ids = jobs.reserve_job_ids(conn, ROUND * (others_per_job + 1))
        mine = set(ids[:: others_per_job + 1])
        jobs.insert(conn, HANDLER, sorted(mine), [("{}", "null")] * len(mine))
        others = [i for i in ids if i not in mine]
        jobs.insert(conn, "o" * 32, others, [("{}", "null")] * len(others))
        conn.execute(update(jobs_table).values(status=JobStatus.PROCESSED, finished_at=1.0))
        conn.execute(insert(job_log).from_select(
            ["job_id", "handler_id", "lease_no", "attempt", "at", "level", "text"],
            select(jobs_table.c.id, jobs_table.c.handler_id, *map(literal, (1, 1, 1.0, "INFO", "a line")))
            .where(jobs_table.c.handler_id != HANDLER),
        ))  # fmt: skip
        conn.commit()
        started = time.process_time()
        gone = pruning.delete_jobs(
            conn, HANDLER, JobStatus.PROCESSED, finished_before=None, upto_id=None, batch=ROUND, day_start=0.0
        )
        conn.commit()
        spent = time.process_time() - started
        conn.close()
        engine.dispose()
    if gone != ROUND:
        raise SystemExit(f"deleted {gone} jobs, not {ROUND}")
    return round(spent * 1e3, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200_000)
    p.add_argument("--keep", type=int, default=10_000, help="processed jobs retention keeps")
    args = p.parse_args()
    if args.jobs < ROUND or args.keep < 0:
        p.error(f"--jobs must be at least {ROUND} and --keep not negative")
    total = args.jobs // ROUND * ROUND  # whole rounds
    figures: dict[str, Any] = {"retention": run(total, args.keep), "no_retention": run(total, None)}
    figures["jobs"], figures["keep"] = total, args.keep
    figures["scattered_batch_ms"] = scattered_batch_ms(SCATTERED_AMONG)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
