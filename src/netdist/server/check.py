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
import hashlib
import json
import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Connection, and_, func, inspect, or_, select, text

from netdist.jobscript import JobSettings
from netdist.server.states import HandlerState, JobStatus
from netdist.server.store.schema import handlers, jobs, packages

TEMP_PREFIX = ".tmp-"  # what BlobStore writes before os.replace (blobs.py)
MAX_ATTEMPTS_KEY = "max-attempts"
DEFAULT_MAX_ATTEMPTS: int = next(f.default for f in dataclasses.fields(JobSettings) if f.name == "max_attempts")  # type: ignore[assignment]
DEFAULT_LIMIT = 100
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FINISHED = (JobStatus.SUCCEEDED, JobStatus.ERRORED, JobStatus.PROCESSED, JobStatus.FAILED)
_HASH_CHUNK = 1 << 20


class Kind(StrEnum):
    SCHEMA = "schema"  # not a netdist store, or not at this netdist's revision
    INTEGRITY = "integrity"  # SQLite's integrity_check
    JOB_STATUS = "job-status"
    JOB_LEASE = "job-lease"
    JOB_FINISHED = "job-finished"
    JOB_ATTEMPTS = "job-attempts"
    JOB_ORPHAN = "job-orphan"  # jobs of a handler instance that does not exist
    HANDLER_STATE = "handler-state"
    HANDLER_DATA = "handler-data"  # settings or handler state that do not parse
    PACKAGE_DATA = "package-data"
    BLOB_MISSING = "blob-missing"
    BLOB_CORRUPT = "blob-corrupt"
    PARTIAL_FILE = "partial-file"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with the store."""

    kind: Kind
    message: str
    job_id: int | None = None
    handler_id: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = []
        if self.job_id is not None:
            where.append(f"job {self.job_id}")
        if self.handler_id is not None:
            where.append(f"handler {self.handler_id}")
        if self.path is not None:
            where.append(self.path)
        return f"{self.kind}: {', '.join(where)}: {self.message}" if where else f"{self.kind}: {self.message}"

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "job_id": self.job_id,
            "handler_id": self.handler_id,
            "path": self.path,
            "message": self.message,
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What a check found, and how much it looked at."""

    problems: tuple[Problem, ...]
    jobs: int
    handlers: int
    blobs: int | None  # None: the data dir was not checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "jobs": self.jobs,
            "handlers": self.handlers,
            "blobs": self.blobs,
            "problems": [p.to_json_dict() for p in self.problems],
        }


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


# -- the files --------------------------------------------------------------------------


def referenced_blobs(conn: Connection) -> tuple[dict[str, str], list[Problem]]:
    """sha256 -> who names it (a package wheel or a job script), and unreadable package rows."""
    named: dict[str, str] = {}
    problems: list[Problem] = []
    for pid, name, version, wheel_json, deps_json in conn.execute(
        select(
            packages.c.id, packages.c.name, packages.c.version, packages.c.wheel_json, packages.c.dependencies_json
        ).order_by(packages.c.id)
    ):
        try:
            wheels = [json.loads(wheel_json), *json.loads(deps_json)]
            shas = [str(w["sha256"]) for w in wheels]
        except (ValueError, TypeError, KeyError):
            problems.append(
                Problem(
                    kind=Kind.PACKAGE_DATA,
                    message=(f"package {name} {version} (id {pid}): wheel_json or dependencies_json does not parse"),
                )
            )
            continue
        for sha in shas:
            named.setdefault(sha, f"a wheel of package {name} {version}")
    for hid, sha in conn.execute(select(handlers.c.id, handlers.c.script_sha256).order_by(handlers.c.id)):
        named.setdefault(sha, f"the job script of handler {hid}")
    return named, problems


def check_blobs(conn: Connection, data_dir: Path) -> tuple[list[Problem], int]:
    """Every named blob exists; every blob file hashes to its name. Returns the problems and the files hashed."""
    named, problems = referenced_blobs(conn)
    root = data_dir / "blobs"
    hashed = 0
    for path in _blob_files(root):
        rel = _rel(path, data_dir)
        if not _SHA256.match(path.name) or path.parent.name != path.name[:2]:
            problems.append(
                Problem(
                    kind=Kind.BLOB_CORRUPT,
                    path=rel,
                    message="not a blob (its name is not the sha256 under its first two digits)",
                )
            )
            continue
        hashed += 1
        try:
            actual = _sha256_of(path)
        except OSError as exc:
            problems.append(Problem(kind=Kind.BLOB_CORRUPT, path=rel, message=f"cannot be read: {exc.strerror or exc}"))
            continue
        if actual != path.name:
            problems.append(Problem(kind=Kind.BLOB_CORRUPT, path=rel, message=f"its content hashes to {actual}"))
    for sha, owner in sorted(named.items()):
        path = root / sha[:2] / sha
        if not _SHA256.match(sha):
            problems.append(Problem(kind=Kind.PACKAGE_DATA, message=f"{owner} names {sha!r}, not a sha256"))
        elif not path.is_file():
            problems.append(Problem(kind=Kind.BLOB_MISSING, path=_rel(path, data_dir), message=f"{owner} is missing"))
    return problems, hashed


def check_partial_files(data_dir: Path) -> list[Problem]:
    """Temporary files (``.tmp-*``) of writes that never finished, where the server writes them."""
    places = [data_dir, data_dir / "envs", data_dir / "blobs"]
    blobs = data_dir / "blobs"
    if blobs.is_dir():
        places += sorted(p for p in blobs.iterdir() if p.is_dir() and not p.name.startswith(TEMP_PREFIX))
    problems = []
    for place in places:
        if not place.is_dir():
            continue
        for entry in sorted(place.iterdir()):
            if entry.name.startswith(TEMP_PREFIX):
                what = "directory" if entry.is_dir() else "file"
                problems.append(
                    Problem(
                        kind=Kind.PARTIAL_FILE,
                        path=_rel(entry, data_dir),
                        message=(f"temporary {what} of an interrupted write (or one in progress on a live server)"),
                    )
                )
    return problems


def _blob_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for sub in sorted(root.iterdir()):
        if sub.is_dir() and not sub.name.startswith(TEMP_PREFIX):
            yield from (p for p in sorted(sub.iterdir()) if p.is_file() and not p.name.startswith(TEMP_PREFIX))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _rel(path: Path, data_dir: Path) -> str:
    try:
        return path.relative_to(data_dir).as_posix()
    except ValueError:
        return str(path)
