"""Job operations, each a function of a Connection run by the group-commit writer.

Every state change of a job is a compare-and-set on (status, lease_no), so
exactly one result is accepted per job whatever the workers send.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from netdist.server.states import JobStatus
from netdist.server.store.schema import handlers, jobs

_DONE = (JobStatus.SUCCEEDED, JobStatus.ERRORED, JobStatus.PROCESSED, JobStatus.FAILED)


@dataclasses.dataclass(frozen=True, slots=True)
class ReadyJob:
    job_id: int
    lease_no: int
    attempts: int
    input: bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a result or a requeue did to one job."""

    job_id: int
    handler_id: str
    previous: JobStatus | None  # None: no such job
    status: JobStatus | None  # None: dropped (duplicate or unknown)
    ready: ReadyJob | None = None  # set when the job is available again
    failed: bool = False  # the result was an error


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ResultIn:
    job_id: int
    lease_no: int
    output: str | None
    error: Mapping[str, str] | None
    duration_seconds: float


# The three statements run once per job go straight to the driver's
# executemany: SQLAlchemy's per-row parameter processing was the largest cost
# left on the writer thread. Written with "?" and adapted to the driver.
_INSERT_SQL = "INSERT INTO jobs (handler_id, status, input, extra, attempts, lease_no) VALUES (?, 'available', ?, ?, 0, 0)"
_LEASE_SQL = (
    "UPDATE jobs SET status = 'leased', lease_no = ?, worker_id = ?, leased_at = ?, attempts = attempts + 1"
    " WHERE id = ? AND status = 'available' AND lease_no = ?"
)
_SUCCEED_SQL = (
    "UPDATE jobs SET status = 'succeeded', output = ?, error_json = NULL, duration_seconds = ?, finished_at = ?,"
    " worker_id = ? WHERE id = ? AND status = 'leased' AND lease_no = ?"
)


def _many(conn: Connection, sql: str, rows: list[tuple[object, ...]]) -> int:
    """Driver-level executemany of ``sql`` (with ``?`` placeholders); returns the rows changed."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    return conn.exec_driver_sql(sql, rows).rowcount


def insert(conn: Connection, handler_id: str, items: Sequence[tuple[str, str]]) -> int:
    if items:
        _many(conn, _INSERT_SQL, [(handler_id, i, e) for i, e in items])
    return len(items)


def load_available(conn: Connection, handler_id: str, after_id: int, limit: int) -> list[ReadyJob]:
    rows = conn.execute(
        select(jobs.c.id, jobs.c.lease_no, jobs.c.attempts, jobs.c.input)
        .where(jobs.c.handler_id == handler_id, jobs.c.status == JobStatus.AVAILABLE, jobs.c.id > after_id)
        .order_by(jobs.c.id)
        .limit(limit)
    ).all()
    return [ReadyJob(r.id, r.lease_no, r.attempts, r.input.encode()) for r in rows]


_ROWS = select(
    jobs.c.id, jobs.c.status, jobs.c.handler_id, jobs.c.lease_no, jobs.c.attempts, jobs.c.worker_id,
    jobs.c.leased_at, jobs.c.finished_at,
).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
_LOCK_ROWS = _ROWS.with_for_update()
_STREAKS = select(handlers.c.id, handlers.c.sequenced_errors).where(handlers.c.id.in_(bindparam("ids", expanding=True)))


def _all_changed(conn: Connection, changed: int, wanted: int) -> bool:
    """Whether an executemany changed every row (where the driver can tell)."""
    return changed == wanted and conn.dialect.supports_sane_multi_rowcount


def lease(conn: Connection, worker_id: str, leased: Sequence[tuple[int, int]], at: float) -> set[int]:
    """Lease each (job_id, new lease_no) to ``worker_id`` if the job is still
    available at the lease before; returns the ids leased.

    One compare-and-set UPDATE per row; only when some row did not match does
    it read back which ones did (the rows it leased carry ``at``)."""
    if not leased:
        return set()
    rows_in: list[tuple[object, ...]] = [(n, worker_id, at, j, n - 1) for j, n in leased]
    if _all_changed(conn, _many(conn, _LEASE_SQL, rows_in), len(rows_in)):
        return {j for j, _ in leased}
    wanted = dict(leased)
    rows = conn.execute(_ROWS, {"ids": list(wanted)}).all()
    return {
        r.id for r in rows
        if r.status == JobStatus.LEASED and r.lease_no == wanted[r.id] and r.worker_id == worker_id and r.leased_at == at
    }


def _lock_rows(conn: Connection, ids: Iterable[int]) -> dict[int, tuple[str, str, int, int]]:
    rows = conn.execute(_LOCK_ROWS, {"ids": sorted(set(ids))}).all()
    return {r.id: (r.status, r.handler_id, r.lease_no, r.attempts) for r in rows}


def complete(
    conn: Connection,
    worker_id: str,
    results: Sequence[ResultIn],
    max_attempts: Mapping[str, int],
    leased: Mapping[int, tuple[int, str]],
    maybe_failing: set[str],
) -> tuple[list[Outcome], dict[str, int]]:
    """Store results. A result is accepted while its job is not done yet, even
    from an older lease (the work is not wasted); otherwise it is a duplicate.

    ``leased`` is the dispatcher's view (job id -> lease no, handler id): a
    success for the current lease takes one compare-and-set UPDATE; anything
    else (failures, old leases, surprises) reads and locks its rows first.
    Returns the outcomes and the handlers whose failed results in a row changed."""
    now = time.time()
    outcomes: dict[int, Outcome] = {}
    fast: dict[int, int] = {}  # index -> job id, one per job
    for i, r in enumerate(results):
        if r.error is None and leased.get(r.job_id, (None, ""))[0] == r.lease_no and r.job_id not in fast.values():
            fast[i] = r.job_id
    if fast:
        params: list[tuple[object, ...]] = [
            (results[i].output, results[i].duration_seconds, now, worker_id, results[i].job_id, results[i].lease_no)
            for i in fast
        ]
        if _all_changed(conn, _many(conn, _SUCCEED_SQL, params), len(params)):
            stored = set(fast.values())
        else:
            stored = {r.id for r in conn.execute(_ROWS, {"ids": list(fast.values())})
                      if r.status == JobStatus.SUCCEEDED and r.finished_at == now and r.worker_id == worker_id}
        for i, job_id in fast.items():
            if job_id in stored:
                outcomes[i] = Outcome(job_id=job_id, handler_id=leased[job_id][1], previous=JobStatus.LEASED,
                                      status=JobStatus.SUCCEEDED)
    rest = [i for i in range(len(results)) if i not in outcomes]
    if rest:
        outcomes.update(_complete_carefully(conn, worker_id, [(i, results[i]) for i in rest], max_attempts, now))
    ordered = [outcomes[i] for i in range(len(results))]
    return ordered, _update_streaks(conn, ordered, maybe_failing)


def _complete_carefully(
    conn: Connection, worker_id: str, results: Sequence[tuple[int, ResultIn]], max_attempts: Mapping[str, int],
    now: float,
) -> dict[int, Outcome]:
    current = _lock_rows(conn, (r.job_id for _, r in results))
    outcomes: dict[int, Outcome] = {}
    succeeded, retried, errored = [], [], []
    for i, r in results:
        row = current.get(r.job_id)
        if row is None:
            outcomes[i] = Outcome(job_id=r.job_id, handler_id="", previous=None, status=None)
            continue
        status, handler_id, lease_no, attempts = JobStatus(row[0]), row[1], row[2], row[3]
        if status in _DONE:
            outcomes[i] = Outcome(job_id=r.job_id, handler_id=handler_id, previous=status, status=None)
            continue
        # Later results for the same job in this batch are duplicates.
        current[r.job_id] = (JobStatus.SUCCEEDED, handler_id, lease_no, attempts)
        params = {"jid": r.job_id, "dur": r.duration_seconds, "at": now, "wid": worker_id}
        ready = None
        if r.error is None:
            succeeded.append({**params, "out": r.output})
            new = JobStatus.SUCCEEDED
        else:
            err = json.dumps(dict(r.error))
            if attempts >= max_attempts.get(handler_id, 1):
                errored.append({**params, "err": err})
                new = JobStatus.ERRORED
            else:
                retried.append({"jid": r.job_id, "err": err})
                new = JobStatus.AVAILABLE
                ready = ReadyJob(r.job_id, lease_no + 1, attempts, b"")
        outcomes[i] = Outcome(job_id=r.job_id, handler_id=handler_id, previous=status, status=new, ready=ready,
                              failed=r.error is not None)
    _write_results(conn, succeeded, retried, errored)
    return outcomes


def _write_results(conn: Connection, succeeded: list[dict[str, object]], retried: list[dict[str, object]],
                   errored: list[dict[str, object]]) -> None:
    base = update(jobs).where(jobs.c.id == bindparam("jid"))
    if succeeded:
        conn.execute(base.values(status=JobStatus.SUCCEEDED, output=bindparam("out"), error_json=None,
                                 duration_seconds=bindparam("dur"), finished_at=bindparam("at"),
                                 worker_id=bindparam("wid")), succeeded)
    if errored:
        conn.execute(base.values(status=JobStatus.ERRORED, error_json=bindparam("err"),
                                 duration_seconds=bindparam("dur"), finished_at=bindparam("at"),
                                 worker_id=bindparam("wid")), errored)
    if retried:  # a new lease number, so that no lease still in flight can take it
        conn.execute(base.values(status=JobStatus.AVAILABLE, error_json=bindparam("err"),
                                 lease_no=jobs.c.lease_no + 1), retried)


def _update_streaks(conn: Connection, outcomes: Sequence[Outcome], maybe_failing: set[str]) -> dict[str, int]:
    """Failed results in a row per handler, in the batch's order: a success
    resets, a failure counts. Read and written only for handlers with a
    failure in this batch or a streak that may not be zero (``maybe_failing``,
    owned by the writer thread: ops run one after the other there)."""
    need = {o.handler_id for o in outcomes if o.status is not None and o.handler_id
            and (o.failed or o.handler_id in maybe_failing)}
    if not need:
        return {}
    stored: dict[str, int] = {r[0]: r[1] for r in conn.execute(_STREAKS, {"ids": sorted(need)})}
    streak = dict(stored)
    for o in outcomes:
        if o.status is not None and o.handler_id in streak:
            streak[o.handler_id] = streak[o.handler_id] + 1 if o.failed else 0
    changed = {h: n for h, n in streak.items() if n != stored[h]}
    for handler_id, value in changed.items():
        conn.execute(update(handlers).where(handlers.c.id == handler_id).values(sequenced_errors=value))
    for handler_id, value in streak.items():
        if value:
            maybe_failing.add(handler_id)
        else:
            maybe_failing.discard(handler_id)
    return changed


def requeue(
    conn: Connection, leases: Sequence[tuple[int, int]], reason: Mapping[str, str], max_attempts: Mapping[str, int]
) -> list[Outcome]:
    """Put leased jobs back (lease lost or expired); a job out of attempts is errored."""
    current = _lock_rows(conn, (j for j, _ in leases))
    err = json.dumps(dict(reason))
    back, dead, outcomes = [], [], []
    for job_id, lease_no in leases:
        row = current.get(job_id)
        if row is None or row[0] != JobStatus.LEASED or row[2] != lease_no:
            continue
        _, handler_id, _, attempts = row
        if attempts >= max_attempts.get(handler_id, 1):
            dead.append({"jid": job_id, "err": err, "at": time.time()})
            outcomes.append(Outcome(job_id=job_id, handler_id=handler_id, previous=JobStatus.LEASED,
                                    status=JobStatus.ERRORED))
        else:
            back.append({"jid": job_id, "err": err})
            outcomes.append(Outcome(job_id=job_id, handler_id=handler_id, previous=JobStatus.LEASED,
                                    status=JobStatus.AVAILABLE, ready=ReadyJob(job_id, lease_no + 1, attempts, b"")))
    base = update(jobs).where(jobs.c.id == bindparam("jid"))
    if back:
        conn.execute(base.values(status=JobStatus.AVAILABLE, error_json=bindparam("err"),
                                 lease_no=jobs.c.lease_no + 1), back)
    if dead:
        conn.execute(base.values(status=JobStatus.ERRORED, error_json=bindparam("err"),
                                 finished_at=bindparam("at")), dead)
    return outcomes


def inputs(conn: Connection, ids: Sequence[int]) -> dict[int, bytes]:
    rows = conn.execute(select(jobs.c.id, jobs.c.input).where(jobs.c.id.in_(ids))).all()
    return {r.id: r.input.encode() for r in rows}


def unprocessed(conn: Connection, handler_id: str, status: JobStatus, limit: int) -> list[tuple[int, str, str, str, int]]:
    """Results (or final errors) waiting for the handler: id, input, output or error, extra, attempts."""
    value = jobs.c.output if status == JobStatus.SUCCEEDED else jobs.c.error_json
    rows = conn.execute(
        select(jobs.c.id, jobs.c.input, value, jobs.c.extra, jobs.c.attempts)
        .where(jobs.c.handler_id == handler_id, jobs.c.status == status)
        .order_by(jobs.c.id)
        .limit(limit)
    ).all()
    return [(r[0], r[1], r[2] or "null", r[3], r[4]) for r in rows]


def mark_processed(conn: Connection, ids: Sequence[int], status: JobStatus) -> None:
    if ids:
        conn.execute(
            update(jobs).where(jobs.c.id.in_(ids)).values(status=status, output=None)
        )


def counts(conn: Connection, handler_id: str | None = None) -> dict[str, dict[str, int]]:
    """Jobs per status per handler."""
    stmt = select(jobs.c.handler_id, jobs.c.status, func.count()).group_by(jobs.c.handler_id, jobs.c.status)
    if handler_id is not None:
        stmt = stmt.where(jobs.c.handler_id == handler_id)
    out: dict[str, dict[str, int]] = {}
    for hid, status, n in conn.execute(stmt):
        out.setdefault(hid, {})[status] = n
    return out


def leased(conn: Connection) -> list[tuple[int, int, str, str]]:
    """Every outstanding lease: job id, lease no, handler id, worker id."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.lease_no, jobs.c.handler_id, jobs.c.worker_id)
        .where(jobs.c.status == JobStatus.LEASED)
    ).all()
    return [(r[0], r[1], r[2], r[3] or "") for r in rows]


def record_batch(
    conn: Connection,
    handler_id: str,
    *,
    processed: Sequence[int],
    processed_status: JobStatus,
    invalid: Sequence[int],
    new_jobs: Sequence[tuple[str, str]],
    handler_state: str,
    summary: str,
    total: int | None,
) -> None:
    """What one call of the handler host did, in one transaction: results
    processed, jobs enqueued, the handler's state saved."""
    mark_processed(conn, [i for i in processed if i not in set(invalid)], processed_status)
    if invalid:
        err = json.dumps({"type": "InvalidOutput", "message": "the worker sent output that is not JSON"})
        conn.execute(update(jobs).where(jobs.c.id.in_(invalid)).values(status=JobStatus.FAILED, error_json=err,
                                                                        output=None))
    insert(conn, handler_id, new_jobs)
    conn.execute(
        update(handlers).where(handlers.c.id == handler_id)
        .values(handler_state_json=handler_state, summary=summary[:2000], total=total)
    )


def listing(conn: Connection, handler_id: str | None, status: str, limit: int) -> list[Any]:
    stmt = select(jobs).where(jobs.c.status == status).order_by(jobs.c.id.desc()).limit(limit)
    if handler_id is not None:
        stmt = stmt.where(jobs.c.handler_id == handler_id)
    return list(conn.execute(stmt).all())


def run_time_since(conn: Connection, since: float) -> dict[tuple[str, str], float]:
    """Seconds of job run time per (worker, handler) in results stored since ``since``."""
    rows = conn.execute(
        select(jobs.c.worker_id, jobs.c.handler_id, func.sum(jobs.c.duration_seconds))
        .where(jobs.c.finished_at >= since, jobs.c.worker_id.is_not(None), jobs.c.duration_seconds.is_not(None))
        .group_by(jobs.c.worker_id, jobs.c.handler_id)
    ).all()
    return {(r[0], r[1]): float(r[2] or 0.0) for r in rows}
