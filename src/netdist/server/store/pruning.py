"""Retention's store operations: each deletes or clears at most one bounded batch, in one transaction.

Run through the group-commit writer by :mod:`netdist.server.retention`, a batch
at a time, so that no transaction holds the writer long. Any job row may go:
job ids come from a counter, never from the highest id left (server/job_ids.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Connection, Delete, Integer, Row, Select, bindparam, delete, func, select, update

from netdist.server.states import JobStatus
from netdist.server.store.schema import handlers, job_attempts, job_inputs, job_log, jobs, pruned_run_time

PRUNED = {JobStatus.PROCESSED: handlers.c.pruned_processed, JobStatus.FAILED: handlers.c.pruned_failed}
"""The statuses retention deletes (both handed to the handler already), and the tally each adds to."""


def handler_ids(conn: Connection) -> list[str]:
    return list(conn.execute(select(handlers.c.id)).scalars())


def newest_past(conn: Connection, handler_id: str, status: JobStatus, keep_newest: int) -> int | None:
    """The id of the newest of the handler's jobs in ``status`` that is not among its ``keep_newest``
    newest (it and every older one are past retention), or None when it has no more than those. Read
    once a pass: each batch that skipped the kept ones itself walked ``keep_newest`` index entries."""
    stmt = (
        select(jobs.c.id)
        .where(jobs.c.handler_id == handler_id, jobs.c.status == status)
        .order_by(jobs.c.id.desc())
        .offset(keep_newest)
        .limit(1)
    )
    found = conn.execute(stmt).scalar()
    return None if found is None else int(found)


SIDE_TABLES = (job_attempts, job_inputs, job_log)
"""The rows kept per job elsewhere, which go with it: attempt history, a long input, log lines."""
NO_UPTO = 2**63 - 1
"""``upto_id`` when there is none: above every job id."""


class _Batch(NamedTuple):
    """The statements of :func:`delete_jobs` for a batch named one way. They, and the others here, are built
    once: built again for each batch, they cost the writer 0.8 ms a batch (0.4 µs a job of 2.1) with the
    GIL held, which the event loop then waits for."""

    run_time: Select[str, float]
    side: tuple[Delete, ...]
    jobs: Delete


_MINE = (jobs.c.handler_id == bindparam("handler_id"), jobs.c.status == bindparam("status"))
_OLDEST = (
    select(jobs.c.id)
    .where(*_MINE, jobs.c.id <= bindparam("upto"))
    .order_by(jobs.c.id)
    .limit(bindparam("batch", type_=Integer))
)
_OLDEST_FINISHED = _OLDEST.add_columns(jobs.c.finished_at)
_BATCH_IDS = _OLDEST.subquery()
_SPAN = select(func.min(_BATCH_IDS.c.id), func.max(_BATCH_IDS.c.id))
_SIDE_ROWS = select(
    *(select(t.c.job_id).where(t.c.job_id.between(bindparam("lo"), bindparam("hi"))).exists() for t in SIDE_TABLES)
)
"""Whether each of SIDE_TABLES has a row of a job between the batch's oldest id and its newest: one seek each."""
_TALLY = {
    status: update(handlers).where(handlers.c.id == bindparam("handler_id")).values({c: c + bindparam("gone")})
    for status, c in PRUNED.items()
}


def _batch(chosen: tuple[ColumnElement[bool], ...]) -> _Batch:
    return _Batch(
        run_time=select(jobs.c.worker_id, func.sum(jobs.c.duration_seconds))
        .where(
            *chosen,
            jobs.c.finished_at >= bindparam("day_start"),
            jobs.c.worker_id.is_not(None),
            jobs.c.duration_seconds.is_not(None),
        )
        .group_by(jobs.c.worker_id),
        side=tuple(delete(t).where(t.c.job_id.in_(select(jobs.c.id).where(*chosen))) for t in SIDE_TABLES),
        jobs=delete(jobs).where(*chosen),
    )


_BY_RANGE = _batch((*_MINE, jobs.c.id.between(bindparam("lo"), bindparam("hi"))))
"""All of the batch: its jobs are the handler's in the status from its oldest id to its newest."""
_BY_IDS = _batch((*_MINE, jobs.c.id.in_(bindparam("ids", expanding=True))))
"""Some of the batch (by age, some finished too recently): its jobs named by their ids."""


def delete_jobs(
    conn: Connection,
    handler_id: str,
    status: JobStatus,
    *,
    finished_before: float | None,
    upto_id: int | None,
    batch: int,
    day_start: float | None = None,
) -> int:
    """Delete up to ``batch`` of the handler's jobs in ``status`` (processed or failed) that are past
    retention: among its ``batch`` oldest (by id, through the (handler, status, id) index: no scan of
    the newer ones) up to ``upto_id`` (from :func:`newest_past`), those that finished before
    ``finished_before``. Their attempt history, long inputs and log lines go with them, and the
    handler's tally grows by as many. Returns how many.

    When all of them go (always by count), the statements name them by the index range from the oldest
    of them to the newest, not by their ids or by the query that found them. On SQLite, 2,000 ids bound
    in each statement cost 7.5 µs of the writer's CPU a job, and the query run again by each statement
    3.4 µs with the run-time sum; the range costs 2.4 µs, and 1.6 µs with the statements built once
    (bench/store_writes.py). The rows kept elsewhere are looked for first, one seek in each table for a row
    of any job in the range, and deleted only where there are some (most jobs have none), by the batch's
    ids: other handlers' jobs in the range keep theirs, and however far apart the batch's jobs lie (between
    many handlers' others), its deletes there cost as many seeks as it has jobs, not a walk of the range.

    ``day_start`` (today's midnight, server time): the run time of those that finished since goes to
    ``pruned_run_time`` first, so that a restarted server still counts it against the day's
    max-time-per-client-per-day (:func:`keep_run_time`)."""
    params: dict[str, Any] = {
        "handler_id": handler_id,
        "status": status.value,
        "upto": NO_UPTO if upto_id is None else upto_id,
        "batch": batch,
    }
    if finished_before is None:
        lo, hi = conn.execute(_SPAN, params).one()
        if lo is None:
            return 0
        named = _BY_RANGE  # exactly the batch: the oldest up to its newest
    else:
        rows = conn.execute(_OLDEST_FINISHED, params).all()
        ids = [r.id for r in rows if (r.finished_at or 0.0) < finished_before]
        if not ids:
            return 0
        lo, hi = ids[0], ids[-1]  # in id order, as read
        named = _BY_RANGE
        if len(ids) < len(rows):  # some finished too recently: the others by their ids
            named, params["ids"] = _BY_IDS, ids
    params["lo"], params["hi"] = lo, hi
    if day_start is not None:
        params["day_start"] = day_start
        keep_run_time(conn, handler_id, conn.execute(named.run_time, params).all(), day_start)
    for side, found in zip(named.side, conn.execute(_SIDE_ROWS, params).one(), strict=True):
        if found:  # some job in the range has rows there, maybe not one of these
            conn.execute(side, params)
    gone = conn.execute(named.jobs, params).rowcount
    if not gone:
        return 0
    conn.execute(_TALLY[status], {"handler_id": handler_id, "gone": gone})
    return int(gone)


_OLD_DAYS = delete(pruned_run_time).where(pruned_run_time.c.day_start < bindparam("day"))
_RUN_TIME_KEY = (
    pruned_run_time.c.handler_id == bindparam("h"),
    pruned_run_time.c.worker_id == bindparam("w"),
    pruned_run_time.c.day_start == bindparam("day"),
)
_ADD_RUN_TIME = (
    update(pruned_run_time).where(*_RUN_TIME_KEY).values(seconds=pruned_run_time.c.seconds + bindparam("add"))
)
_NEW_RUN_TIME = pruned_run_time.insert().values(
    handler_id=bindparam("h"), worker_id=bindparam("w"), day_start=bindparam("day"), seconds=bindparam("add")
)


def keep_run_time(conn: Connection, handler_id: str, found: Sequence[Row[str, float]], day_start: float) -> None:
    """Add ``found``, the run time per worker of jobs about to be deleted that finished since ``day_start``,
    to the handler's row per worker in ``pruned_run_time`` for that day; rows of earlier days go."""
    if not found:
        return
    conn.execute(_OLD_DAYS, {"day": day_start})
    for worker_id, seconds in found:
        key = {"h": handler_id, "w": worker_id, "day": day_start, "add": float(seconds or 0.0)}
        if not conn.execute(_ADD_RUN_TIME, key).rowcount:
            conn.execute(_NEW_RUN_TIME, key)


def drop_outputs(conn: Connection, handler_id: str, *, after_id: int, finished_before: float, batch: int) -> int:
    """Clear the outputs of the handler's processed jobs past ``after_id`` that finished before
    ``finished_before``, oldest first, up to ``batch`` of them, stopping at the first newer one.
    Returns the id to go on after next time (``after_id`` when nothing was old enough)."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.finished_at)
        .where(jobs.c.handler_id == handler_id, jobs.c.status == JobStatus.PROCESSED, jobs.c.id > after_id)
        .order_by(jobs.c.id)
        .limit(batch)
    ).all()
    ids = []
    for r in rows:
        if (r.finished_at or 0.0) >= finished_before:
            break
        ids.append(r.id)
    if ids:
        conn.execute(update(jobs).where(jobs.c.id.in_(ids), jobs.c.output.is_not(None)).values(output=None))
    return ids[-1] if ids else after_id


def delete_attempts(conn: Connection, *, finished_before: float, batch: int) -> int:
    """Delete up to ``batch`` rows of attempt history that ended before ``finished_before``."""
    ids = list(
        conn.execute(
            select(job_attempts.c.id).where(job_attempts.c.finished_at < finished_before).limit(batch)
        ).scalars()
    )
    if not ids:
        return 0
    return int(conn.execute(delete(job_attempts).where(job_attempts.c.id.in_(ids))).rowcount)
