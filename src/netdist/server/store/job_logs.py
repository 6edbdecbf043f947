"""What jobs logged (ctx.log), each a function of a Connection; appends run in the group-commit writer.

Fenced like results (:mod:`netdist.server.store.jobs`): lines are kept only
for the job's current lease held by the worker that sent them (status
``leased``, the lease number, the worker id), so a stale or forged stream
writes nothing for a job it does not hold. Bounded per lease: at most
:data:`~netdist.wire.MAX_JOB_LOG_LINES` lines and
:data:`~netdist.wire.MAX_JOB_LOG_CHARS` characters, then one entry counting
the lines dropped (``dropped`` > 0), which stays the lease's last; the worker
keeps to the same bound, so normally the server only adds up its count.
Rows go with their handler (``catalog.delete_handler``) or their jobs
(``pruning.delete_jobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, func, insert, select, update

from netdist.server.lease_model import Ref
from netdist.server.states import JobStatus
from netdist.server.store.schema import job_log, jobs
from netdist.wire import MAX_JOB_LOG_CHARS, MAX_JOB_LOG_LINES

_DONE = frozenset({JobStatus.SUCCEEDED, JobStatus.ERRORED, JobStatus.PROCESSED, JobStatus.FAILED})


class JobLogIn(NamedTuple):
    """Lines one lease logged, as a worker sent them (cleaned by the servicer)."""

    job_id: int
    lease_no: int
    lines: Sequence[tuple[float, str, str]]
    """(Unix time, level, text) each."""
    dropped: int = 0
    """Lines the worker counted past the bound and did not send."""


class _Kept:
    """What one lease holds so far."""

    __slots__ = ("chars", "dropped", "lines", "marker_id")

    def __init__(self, lines: int = 0, chars: int = 0) -> None:
        self.lines, self.chars = lines, chars
        self.marker_id: int | None = None
        self.dropped = 0


def marker_text(dropped: int) -> str:
    return (
        f"… {dropped} line{'' if dropped == 1 else 's'} dropped (a job attempt keeps at most"
        f" {MAX_JOB_LOG_LINES} lines and {MAX_JOB_LOG_CHARS:,} characters of log)"
    )


_HELD = select(jobs.c.id, jobs.c.status, jobs.c.lease_no, jobs.c.worker_id, jobs.c.attempts, jobs.c.handler_id).where(
    jobs.c.id.in_(bindparam("ids", expanding=True))
)
_KEPT = (
    select(
        job_log.c.job_id,
        job_log.c.lease_no,
        func.count(),
        func.coalesce(func.sum(func.length(job_log.c.text)), 0),
        func.max(job_log.c.dropped),
    )
    .where(job_log.c.job_id.in_(bindparam("ids", expanding=True)))
    .group_by(job_log.c.job_id, job_log.c.lease_no)
)


def append(conn: Connection, worker_id: str, entries: Sequence[JobLogIn], now: float) -> int:
    """Keep the lines of each entry whose lease is its job's current one, held by ``worker_id``,
    within the bound; returns the lines kept."""
    found = {r.id: r for r in conn.execute(_HELD, {"ids": sorted({e.job_id for e in entries})})}
    held = [
        (e, r)
        for e in entries
        if (r := found.get(e.job_id)) is not None
        and (
            (r.status == JobStatus.LEASED and r.lease_no == e.lease_no and r.worker_id == worker_id)
            or (r.status == JobStatus.AVAILABLE and r.lease_no < e.lease_no)  # held lazily (server/leases.py)
        )
    ]
    if not held:
        return 0
    kept: dict[Ref, _Kept] = {}
    for job_id, lease_no, count, chars, dropped in conn.execute(_KEPT, {"ids": sorted({e.job_id for e, _ in held})}):
        k = kept[(job_id, lease_no)] = _Kept(count, int(chars))
        if dropped:
            k.marker_id, k.dropped = conn.execute(
                select(job_log.c.id, job_log.c.dropped).where(
                    job_log.c.job_id == job_id, job_log.c.lease_no == lease_no, job_log.c.dropped > 0
                )
            ).one()
    rows: list[dict[str, Any]] = []
    markers: list[tuple[dict[str, Any], _Kept, int]] = []
    for entry, job in held:
        k = kept.setdefault((entry.job_id, entry.lease_no), _Kept())
        base = {"job_id": entry.job_id, "lease_no": entry.lease_no, "handler_id": job.handler_id}
        base["attempt"] = job.attempts + 1
        dropped = entry.dropped
        for at, level, text in entry.lines:
            if k.marker_id is not None or k.lines >= MAX_JOB_LOG_LINES or k.chars + len(text) > MAX_JOB_LOG_CHARS:
                dropped += 1
                k.marker_id = k.marker_id or -1  # once cut, nothing more for this lease
                continue
            k.lines += 1
            k.chars += len(text)
            rows.append({**base, "at": at, "level": level, "text": text, "dropped": 0})
        if dropped > 0:
            markers.append((base, k, dropped))
    if rows:
        conn.execute(insert(job_log), rows)
    for base, k, dropped in markers:
        k.dropped += dropped
        if k.marker_id is not None and k.marker_id > 0:
            conn.execute(
                update(job_log)
                .where(job_log.c.id == k.marker_id)
                .values(dropped=k.dropped, text=marker_text(k.dropped))
            )
        else:
            values = {**base, "at": now, "level": "WARNING", "text": marker_text(k.dropped), "dropped": k.dropped}
            k.marker_id = conn.execute(insert(job_log).values(**values).returning(job_log.c.id)).scalar_one()
    return len(rows)


def for_job(conn: Connection, job_id: int, *, after_id: int = 0, tail: int = 0) -> list[Any]:
    """A job's lines in the order they came (every lease); the last ``tail`` only, if given."""
    stmt = select(job_log).where(job_log.c.job_id == job_id, job_log.c.id > after_id)
    if tail:
        return list(reversed(conn.execute(stmt.order_by(job_log.c.id.desc()).limit(tail)).all()))
    return list(conn.execute(stmt.order_by(job_log.c.id)).all())


def for_handler(conn: Connection, handler_id: str, *, after_id: int = 0, tail: int = 0, limit: int = 0) -> list[Any]:
    """The lines of a handler's jobs in the order they came: the last ``tail``, or else the first ``limit``
    after ``after_id`` (0: no limit)."""
    stmt = select(job_log).where(job_log.c.handler_id == handler_id, job_log.c.id > after_id)
    if tail:
        return list(reversed(conn.execute(stmt.order_by(job_log.c.id.desc()).limit(tail)).all()))
    stmt = stmt.order_by(job_log.c.id)
    return list(conn.execute(stmt.limit(limit) if limit else stmt).all())


def job_status(conn: Connection, job_id: int) -> str | None:
    """The job's status; None when there is no such job (never was, or removed)."""
    status: str | None = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
    return status


def ended(status: str | None) -> bool:
    """Whether a job in ``status`` will log no more (it has its result for good, or is gone)."""
    return status is None or status in _DONE
