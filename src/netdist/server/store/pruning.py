"""Retention's store operations: each deletes or clears at most one bounded batch, in one transaction.

Run through the group-commit writer by :mod:`netdist.server.retention`, a batch
at a time, so that no transaction holds the writer long. Any job row may go:
job ids come from a counter, never from the highest id left (server/job_ids.py).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, delete, func, select, update

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
    3.4 µs with the run-time sum; the range costs 2.4 µs (bench/README.md). The rows kept elsewhere are
    found through their own index over the same range, so a batch whose jobs have none (most) costs one
    seek in each of those tables; other handlers' jobs in the range keep theirs.

    ``day_start`` (today's midnight, server time): the run time of those that finished since goes to
    ``pruned_run_time`` first, so that a restarted server still counts it against the day's
    max-time-per-client-per-day (:func:`keep_run_time`)."""
    mine = (jobs.c.handler_id == handler_id, jobs.c.status == status)
    oldest = select(jobs.c.id).where(*mine)
    if upto_id is not None:
        oldest = oldest.where(jobs.c.id <= upto_id)
    oldest = oldest.order_by(jobs.c.id).limit(batch)
    if finished_before is None:
        span = oldest.subquery()
        lo, hi = conn.execute(select(func.min(span.c.id), func.max(span.c.id))).one()
        if lo is None:
            return 0
        chosen = (*mine, jobs.c.id.between(lo, hi))  # exactly the batch: the oldest up to its newest
    else:
        rows = conn.execute(oldest.add_columns(jobs.c.finished_at)).all()
        ids = [r.id for r in rows if (r.finished_at or 0.0) < finished_before]
        if not ids:
            return 0
        lo, hi = ids[0], ids[-1]  # in id order, as read
        whole = len(ids) == len(rows)
        chosen = (*mine, jobs.c.id.between(lo, hi)) if whole else (*mine, jobs.c.id.in_(ids))
    if day_start is not None:
        keep_run_time(conn, handler_id, chosen, day_start)
    for table in SIDE_TABLES:
        theirs = select(jobs.c.id).where(jobs.c.id == table.c.job_id, *chosen).exists()
        conn.execute(delete(table).where(table.c.job_id.between(lo, hi), theirs))
    gone = conn.execute(delete(jobs).where(*chosen)).rowcount
    if not gone:
        return 0
    tally = PRUNED[status]
    conn.execute(update(handlers).where(handlers.c.id == handler_id).values({tally: tally + gone}))
    return int(gone)


def keep_run_time(conn: Connection, handler_id: str, chosen: tuple[ColumnElement[bool], ...], day_start: float) -> None:
    """Add the run time of the jobs ``chosen`` (the conditions that name them; about to be deleted) that
    finished since ``day_start`` to the handler's row per worker in ``pruned_run_time`` for that day;
    rows of earlier days go."""
    found = conn.execute(
        select(jobs.c.worker_id, func.sum(jobs.c.duration_seconds))
        .where(
            *chosen,
            jobs.c.finished_at >= day_start,
            jobs.c.worker_id.is_not(None),
            jobs.c.duration_seconds.is_not(None),
        )
        .group_by(jobs.c.worker_id)
    ).all()
    if not found:
        return
    conn.execute(delete(pruned_run_time).where(pruned_run_time.c.day_start < day_start))
    for worker_id, seconds in found:
        key = (
            pruned_run_time.c.handler_id == handler_id,
            pruned_run_time.c.worker_id == worker_id,
            pruned_run_time.c.day_start == day_start,
        )
        added = conn.execute(update(pruned_run_time).where(*key).values(seconds=pruned_run_time.c.seconds + seconds))
        if not added.rowcount:
            conn.execute(
                pruned_run_time.insert().values(
                    handler_id=handler_id, worker_id=worker_id, day_start=day_start, seconds=float(seconds or 0.0)
                )
            )


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
