"""Reads for job inspection: one job whole (its row, its earlier attempts), and names for listings.

Attempts that did not end their job are rows of ``job_attempts`` (written by
:mod:`netdist.server.store.jobs` with the write that ended them); the attempt
that ended the job, or runs now, is the job's own row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, select

from netdist.server.store.jobs import JOB_COLUMNS
from netdist.server.store.schema import handlers, job_attempts, jobs, workers


class JobRecord(NamedTuple):
    """One job as the store holds it, with what a person needs to read it."""

    row: Any  # the jobs row
    job_name: str
    script_name: str
    earlier: list[Any]  # job_attempts rows, oldest first
    not_shown: int  # earlier attempts left out (the oldest)
    worker_names: dict[str, str]


def read_job(conn: Connection, job_id: int, *, max_attempts: int) -> JobRecord | None:
    """The job and at most ``max_attempts`` of its newest earlier attempts; None if no such job."""
    row = conn.execute(select(*JOB_COLUMNS).where(jobs.c.id == job_id)).first()
    if row is None:
        return None
    handler = conn.execute(
        select(handlers.c.job_name, handlers.c.script_filename).where(handlers.c.id == row.handler_id)
    ).first()
    total = conn.execute(select(func.count()).where(job_attempts.c.job_id == job_id)).scalar_one()
    earlier = list(
        conn.execute(
            select(job_attempts)
            .where(job_attempts.c.job_id == job_id)
            .order_by(job_attempts.c.lease_no.desc(), job_attempts.c.id.desc())
            .limit(max_attempts)
        ).all()
    )
    earlier.reverse()
    job_name = handler.job_name if handler is not None else ""
    script_name = (handler.script_filename if handler is not None else "") or f"{job_name or 'script'}.py"
    ids = {a.worker_id for a in earlier} | {row.worker_id}
    return JobRecord(row, job_name, script_name, earlier, total - len(earlier), worker_names(conn, ids))


def worker_names(conn: Connection, ids: Iterable[str | None]) -> dict[str, str]:
    """The names of these workers, by id (a worker the store no longer holds is left out)."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    return {r.id: r.name for r in conn.execute(select(workers.c.id, workers.c.name).where(workers.c.id.in_(wanted)))}


def job_names(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    """The job names of these handlers, by id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {
        r.id: r.job_name
        for r in conn.execute(select(handlers.c.id, handlers.c.job_name).where(handlers.c.id.in_(wanted)))
    }
