"""Invariants of a store, checked on a live or stopped server: ``netdist-server check``.

Pure functions over a SQLAlchemy Connection (and the data dir for the files):
they only read, and each problem found is a value. The fault tests run the
same checks after every fault they inject.

What holds in a sound store:

- the schema is at the revision this netdist migrates to;
- SQLite's ``PRAGMA integrity_check`` is ok;
- every job has a known status; a leased job has a worker, a lease time and a
  lease number >= 1; a finished job has ``finished_at``, its output (when it
  succeeded) or its error (when it failed); its attempts are between 0 and its
  lease number and within its handler's ``max-attempts``;
- every job belongs to a handler instance that exists; each instance has a
  known state, settings and state that parse;
- every blob a package or a job script names exists under the data dir and
  hashes to its name, every blob file hashes to its name, and no temporary
  file of an interrupted write is left behind.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Connection, and_, func, inspect, or_, select, text

from netdist.jobscript import JobSettings
from netdist.server.check_files import check_blobs, check_partial_files
from netdist.server.check_findings import Kind, Problem, Report
from netdist.server.states import HandlerState, JobStatus
from netdist.server.store.schema import handlers, jobs

MAX_ATTEMPTS_KEY = "max-attempts"
DEFAULT_MAX_ATTEMPTS: int = next(f.default for f in dataclasses.fields(JobSettings) if f.name == "max_attempts")  # type: ignore[assignment]
DEFAULT_LIMIT = 100
_FINISHED = (JobStatus.SUCCEEDED, JobStatus.ERRORED, JobStatus.PROCESSED, JobStatus.FAILED)


def check(conn: Connection, data_dir: Path | None = None, *, limit: int = DEFAULT_LIMIT) -> Report:
    """Every check; the files too when ``data_dir`` is given. At most ``limit``
    problems of one check are listed, then one line says how many more."""
    problems = check_schema(conn)
    if any(p.kind == Kind.SCHEMA and "not a netdist store" in p.message for p in problems):
        return Report(problems=tuple(problems), jobs=0, handlers=0, blobs=None)
    problems += check_integrity(conn, limit=limit)
    handler_problems, max_attempts = check_handlers(conn)
    problems += handler_problems
    problems += check_jobs(conn, max_attempts, limit=limit)
    blob_count = None
    if data_dir is not None:
        blob_problems, blob_count = check_blobs(conn, data_dir)
        problems += blob_problems
        problems += check_partial_files(data_dir)
    return Report(
        problems=tuple(problems),
        jobs=conn.execute(select(func.count()).select_from(jobs)).scalar_one(),
        handlers=len(max_attempts),
        blobs=blob_count,
    )


# -- the database ---------------------------------------------------------------------


def expected_revision() -> str | None:
    """The newest migration of this netdist."""
    config = Config()
    config.set_main_option("script_location", "netdist.server.store:migrations")
    return ScriptDirectory.from_config(config).get_current_head()


def check_schema(conn: Connection) -> list[Problem]:
    tables = set(inspect(conn).get_table_names())
    missing = {"alembic_version", "jobs", "handlers", "packages"} - tables
    if missing:
        return [
            Problem(
                kind=Kind.SCHEMA,
                message=(
                    f"not a netdist store (no table {', '.join(sorted(missing))}); "
                    "check the URL, or start the server once to create it"
                ),
            )
        ]
    found = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
    want = expected_revision()
    if found != [want]:
        return [
            Problem(
                kind=Kind.SCHEMA,
                message=(
                    f"the store is at revision {', '.join(found) or 'none'}, this netdist expects {want}: "
                    "start the server of this version once to migrate it (or use the netdist that wrote it)"
                ),
            )
        ]
    return []


def check_integrity(conn: Connection, *, limit: int = DEFAULT_LIMIT) -> list[Problem]:
    """SQLite's own check of its file (pages, indexes); nothing on other databases."""
    if conn.dialect.name != "sqlite":
        return []
    rows = [str(r[0]) for r in conn.execute(text(f"PRAGMA integrity_check({max(1, limit)})"))]
    if rows == ["ok"]:
        return []
    return [Problem(kind=Kind.INTEGRITY, message=f"SQLite integrity_check: {line}") for line in rows]


def check_handlers(conn: Connection) -> tuple[list[Problem], dict[str, int]]:
    """Each instance's state and JSON; returns the problems and each instance's max-attempts."""
    problems: list[Problem] = []
    max_attempts: dict[str, int] = {}
    states = {s.value for s in HandlerState}
    rows = conn.execute(
        select(handlers.c.id, handlers.c.state, handlers.c.settings_json, handlers.c.handler_state_json).order_by(
            handlers.c.id
        )
    )
    for hid, state, settings_json, state_json in rows:
        if state not in states:
            problems.append(
                Problem(
                    kind=Kind.HANDLER_STATE,
                    handler_id=hid,
                    message=(f"unknown state {state!r} (one of {', '.join(sorted(states))})"),
                )
            )
        max_attempts[hid] = DEFAULT_MAX_ATTEMPTS
        settings = _json_object(settings_json)
        if settings is None:
            problems.append(
                Problem(kind=Kind.HANDLER_DATA, handler_id=hid, message="settings_json is not a JSON object")
            )
        else:
            value = settings.get(MAX_ATTEMPTS_KEY, DEFAULT_MAX_ATTEMPTS)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                max_attempts[hid] = value
            else:
                problems.append(
                    Problem(
                        kind=Kind.HANDLER_DATA,
                        handler_id=hid,
                        message=(f"settings_json: {MAX_ATTEMPTS_KEY} is {value!r}, not an integer >= 1"),
                    )
                )
        if _json_object(state_json) is None:
            problems.append(
                Problem(kind=Kind.HANDLER_DATA, handler_id=hid, message="handler_state_json is not a JSON object")
            )
    return problems, max_attempts


def check_jobs(conn: Connection, max_attempts: dict[str, int], *, limit: int = DEFAULT_LIMIT) -> list[Problem]:
    """The per-job invariants, one query each, the offending rows only."""
    c = jobs.c
    leased = c.status == JobStatus.LEASED
    checks: list[tuple[Kind, ColumnElement[bool], str]] = [
        (
            Kind.JOB_STATUS,
            c.status.not_in([s.value for s in JobStatus]),
            f"unknown status {{status!r}} (one of {', '.join(s.value for s in JobStatus)})",
        ),
        (Kind.JOB_LEASE, and_(leased, or_(c.worker_id.is_(None), c.worker_id == "")), "leased without a worker id"),
        (Kind.JOB_LEASE, and_(leased, c.leased_at.is_(None)), "leased without leased_at"),
        (Kind.JOB_LEASE, and_(leased, c.lease_no < 1), "leased with lease_no {lease_no} (must be >= 1)"),
        (Kind.JOB_FINISHED, and_(c.status.in_(_FINISHED), c.finished_at.is_(None)), "{status} without finished_at"),
        (Kind.JOB_FINISHED, and_(c.status == JobStatus.SUCCEEDED, c.output.is_(None)), "succeeded without its output"),
        (
            Kind.JOB_FINISHED,
            and_(c.status.in_([JobStatus.ERRORED, JobStatus.FAILED]), c.error_json.is_(None)),
            "{status} without its error",
        ),
        (Kind.JOB_ATTEMPTS, c.attempts < 0, "attempts {attempts} is negative"),
        (
            Kind.JOB_ATTEMPTS,
            c.attempts > c.lease_no,
            "attempts {attempts} exceed lease_no {lease_no}: an attempt was charged without a lease",
        ),
    ]
    for handler_id, most in sorted(max_attempts.items()):
        checks.append(
            (
                Kind.JOB_ATTEMPTS,
                and_(c.handler_id == handler_id, c.attempts > most),
                f"attempts {{attempts}} exceed the handler's max-attempts {most}",
            )
        )
    problems: list[Problem] = []
    for kind, where, message in checks:
        problems += _job_rows(conn, kind, where, message, limit)
    orphans = conn.execute(
        select(c.handler_id, func.count(), func.min(c.id))
        .select_from(jobs.outerjoin(handlers, handlers.c.id == c.handler_id))
        .where(handlers.c.id.is_(None))
        .group_by(c.handler_id)
        .order_by(c.handler_id)
    ).all()
    for handler_id, count, first in orphans[:limit]:
        problems.append(
            Problem(
                kind=Kind.JOB_ORPHAN,
                handler_id=handler_id,
                message=(f"{count} job(s) (the first is {first}) belong to no existing handler instance"),
            )
        )
    return problems


def _job_rows(conn: Connection, kind: Kind, where: ColumnElement[bool], message: str, limit: int) -> list[Problem]:
    c = jobs.c
    rows = conn.execute(
        select(c.id, c.handler_id, c.status, c.lease_no, c.attempts).where(where).order_by(c.id).limit(limit + 1)
    ).all()
    problems = [
        Problem(kind=kind, job_id=r.id, handler_id=r.handler_id, message=message.format(**r._mapping))
        for r in rows[:limit]
    ]
    if len(rows) > limit:
        total = conn.execute(select(func.count()).select_from(jobs).where(where)).scalar_one()
        problems.append(Problem(kind=kind, message=f"... and {total - limit} more job(s) like the ones above"))
    return problems


def _json_object(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
