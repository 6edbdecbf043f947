"""Packages, handler instances, workers and the handler log: functions of a Connection."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from netdist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from netdist.server.store.schema import (
    handler_log,
    handlers,
    job_attempts,
    job_inputs,
    job_log,
    jobs,
    packages,
    pruned_run_time,
    workers,
)

LOG_KEEP = 5000


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PackageRecord:
    id: int
    name: str
    version: str
    wheel_json: str
    dependencies_json: str
    handlers_json: str
    uploaded_at: float
    current: bool
    uploaded_by: str = ""  # the name of the token that uploaded it

    @property
    def wheel(self) -> dict[str, Any]:
        return json.loads(self.wheel_json)  # type: ignore[no-any-return]

    @property
    def dependencies(self) -> list[dict[str, Any]]:
        return json.loads(self.dependencies_json)  # type: ignore[no-any-return]

    @property
    def handlers(self) -> dict[str, str]:
        return json.loads(self.handlers_json)  # type: ignore[no-any-return]

    @property
    def environment(self) -> list[str]:
        """Wheel sha256s: the package first, then its dependencies."""
        return [self.wheel["sha256"], *(d["sha256"] for d in self.dependencies)]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerRecord:
    id: str
    package: str
    handler: str
    job_name: str
    script_sha256: str
    script_source: str
    settings_json: str
    custom_json: str
    state: str
    message: str
    handler_state_json: str
    summary: str
    total: int | None
    exhausted: bool
    sequenced_errors: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    script_uploaded_by: str = ""  # the name of the token that added the job script
    script_filename: str = ""  # the job script's file name as uploaded ("" before it was kept)
    pruned_processed: int = 0  # processed jobs retention deleted
    pruned_failed: int = 0  # failed jobs retention deleted
    deps_lock_json: str = ""  # its dependency lock (server/deps_lock.py)

    @property
    def script_name(self) -> str:
        """The name tracebacks give the job script: its uploaded file name, else ``<job name>.py``."""
        return self.script_filename or f"{self.job_name}.py"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    id: str
    name: str
    labels_json: str
    slots: int
    hostname: str
    version: str
    connected: bool
    connected_since: float | None
    last_seen: float | None
    jobs_done: int
    jobs_failed: int
    disabled: bool
    platform_json: str = ""  # as reported in Hello (netdist.platforms.Platform)


_WORKER_COLUMNS = [workers.c[f.name] for f in dataclasses.fields(WorkerRecord)]
"""A worker's columns but its credential's (store/credentials.py keeps that)."""


# -- packages ---------------------------------------------------------------


def add_package(
    conn: Connection,
    *,
    name: str,
    version: str,
    wheel: Mapping[str, Any],
    dependencies: Sequence[Mapping[str, Any]],
    handler_entries: Mapping[str, str],
    uploaded_by: str = "",
) -> tuple[PackageRecord, bool]:
    """Store a package version and make it current; ``False`` if these exact wheels were stored."""
    wheel_json = json.dumps(dict(wheel), sort_keys=True)
    deps_json = json.dumps([dict(d) for d in dependencies], sort_keys=True)
    existing = conn.execute(
        select(packages).where(
            packages.c.name == name, packages.c.wheel_json == wheel_json, packages.c.dependencies_json == deps_json
        )
    ).first()
    conn.execute(update(packages).where(packages.c.name == name).values(current=False))
    if existing is not None:
        conn.execute(update(packages).where(packages.c.id == existing.id).values(current=True))
        return get_package(conn, existing.id), False
    pid = conn.execute(
        insert(packages).values(
            name=name,
            version=version,
            wheel_json=wheel_json,
            dependencies_json=deps_json,
            handlers_json=json.dumps(dict(handler_entries), sort_keys=True),
            uploaded_at=time.time(),
            current=True,
            uploaded_by=uploaded_by,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    return get_package(conn, pid), True


def get_package(conn: Connection, package_id: int) -> PackageRecord:
    row = conn.execute(select(packages).where(packages.c.id == package_id)).one()
    return PackageRecord(**row._mapping)


def current_package(conn: Connection, name: str) -> PackageRecord | None:
    row = conn.execute(select(packages).where(packages.c.name == name, packages.c.current.is_(True))).first()
    return PackageRecord(**row._mapping) if row else None


def stored_dependencies(conn: Connection, name: str) -> list[dict[str, Any]]:
    """The dependency wheels stored with every version of package ``name``, each once: the newest upload's first."""
    seen: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        select(packages.c.dependencies_json).where(packages.c.name == name).order_by(packages.c.id.desc())
    ).scalars()
    for deps_json in rows:
        for wheel in json.loads(deps_json):
            seen.setdefault(wheel["sha256"], wheel)
    return list(seen.values())


def package_handlers(conn: Connection, name: str) -> list[HandlerRecord]:
    """The handler instances of package ``name``."""
    stmt = select(handlers).where(handlers.c.package == name).order_by(handlers.c.created_at)
    return [HandlerRecord(**r._mapping) for r in conn.execute(stmt)]


def list_packages(conn: Connection, *, all_versions: bool) -> list[PackageRecord]:
    stmt = select(packages).order_by(packages.c.name, packages.c.id)
    if not all_versions:
        stmt = stmt.where(packages.c.current.is_(True))
    return [PackageRecord(**r._mapping) for r in conn.execute(stmt)]


def remove_package(
    conn: Connection, name: str, version: str | None, *, force: bool = False, running: frozenset[str] = frozenset()
) -> int:
    """Remove a package (every version, or one). Unless ``force``, FailedPreconditionError naming the
    handler instances that use it: all of them when no version of the package would be left, else
    those in ``running`` (the ids whose host runs the version removed)."""
    stmt = delete(packages).where(packages.c.name == name)
    matching = select(func.count()).select_from(packages).where(packages.c.name == name)
    if version:
        stmt = stmt.where(packages.c.version == version)
        matching = matching.where(packages.c.version == version)
    if not conn.execute(matching).scalar():
        raise NotFoundError(f"no package {name!r}" + (f" version {version!r}" if version else ""))
    if not force:
        _refuse_if_used(conn, name, version, running)
    removed = conn.execute(stmt).rowcount
    newest = conn.execute(select(func.max(packages.c.id)).where(packages.c.name == name)).scalar()
    if newest is not None:
        conn.execute(update(packages).where(packages.c.id == newest).values(current=True))
    return removed


_NAMED_USERS = 10
"""Most handler instances a refused removal names (the count is exact)."""


def _refuse_if_used(conn: Connection, name: str, version: str | None, running: frozenset[str]) -> None:
    users = [HandlerRecord(**r._mapping) for r in conn.execute(select(handlers).where(handlers.c.package == name))]
    if not users:
        return
    others = select(func.count()).select_from(packages).where(packages.c.name == name)
    if version:
        others = others.where(packages.c.version != version)
    if version and conn.execute(others).scalar():
        users = [u for u in users if u.id in running]  # other versions stay: only a host running this one cares
        if not users:
            return
    names = ", ".join(f"{u.job_name} ({u.id})" for u in users[:_NAMED_USERS])
    more = f" and {len(users) - _NAMED_USERS} more" if len(users) > _NAMED_USERS else ""
    what = f"package {name!r}" + (f" version {version!r}" if version else "")
    raise FailedPreconditionError(
        f"{what} is used by {len(users)} handler{'s' if len(users) != 1 else ''}: {names}{more}; "
        "remove them first (netdist-admin handlers remove), or use --force"
    )


# -- handler instances -----------------------------------------------------------


def handler_by_key(conn: Connection, package: str, handler: str, job_name: str) -> HandlerRecord | None:
    row = conn.execute(
        select(handlers).where(
            handlers.c.package == package, handlers.c.handler == handler, handlers.c.job_name == job_name
        )
    ).first()
    return HandlerRecord(**row._mapping) if row else None


def insert_handler(conn: Connection, **values: Any) -> HandlerRecord:
    conn.execute(insert(handlers).values(**values))
    return get_handler(conn, values["id"])


def update_handler(conn: Connection, handler_id: str, **values: Any) -> None:
    conn.execute(update(handlers).where(handlers.c.id == handler_id).values(**values))


def get_handler(conn: Connection, handler_id: str) -> HandlerRecord:
    row = conn.execute(select(handlers).where(handlers.c.id == handler_id)).first()
    if row is None:
        raise NotFoundError(f"no handler with id {handler_id!r}")
    return HandlerRecord(**row._mapping)


def handler_exists(conn: Connection, handler_id: str) -> bool:
    return conn.execute(select(handlers.c.id).where(handlers.c.id == handler_id)).first() is not None


def list_handlers(conn: Connection) -> list[HandlerRecord]:
    return [HandlerRecord(**r._mapping) for r in conn.execute(select(handlers).order_by(handlers.c.created_at))]


def resolve_handler(conn: Connection, ref: str) -> HandlerRecord:
    """A handler by id, unique id prefix, or job name."""
    ref = ref.strip()
    if not ref:
        raise InvalidArgumentError("handler reference is empty: give an id, an id prefix or a job name")
    rows = conn.execute(select(handlers).where((handlers.c.id.startswith(ref)) | (handlers.c.job_name == ref))).all()
    exact = [r for r in rows if ref in (r.id, r.job_name)]
    found = exact or rows
    if not found:
        raise NotFoundError(f"no handler matches {ref!r} (by id, id prefix or job name)")
    if len(found) > 1:
        raise InvalidArgumentError(
            f"{ref!r} matches {len(found)} handlers ({', '.join(r.id for r in found)}): use the id"
        )
    return HandlerRecord(**found[0]._mapping)


def delete_handler(conn: Connection, handler_id: str) -> None:
    its_jobs = select(jobs.c.id).where(jobs.c.handler_id == handler_id)
    conn.execute(delete(job_inputs).where(job_inputs.c.job_id.in_(its_jobs)))
    conn.execute(delete(jobs).where(jobs.c.handler_id == handler_id))
    conn.execute(delete(job_attempts).where(job_attempts.c.handler_id == handler_id))
    conn.execute(delete(handler_log).where(handler_log.c.handler_id == handler_id))
    conn.execute(delete(job_log).where(job_log.c.handler_id == handler_id))
    conn.execute(delete(pruned_run_time).where(pruned_run_time.c.handler_id == handler_id))
    conn.execute(delete(handlers).where(handlers.c.id == handler_id))


# -- workers -------------------------------------------------------------------


def worker_connected(
    conn: Connection,
    *,
    worker_id: str,
    name: str,
    labels: Mapping[str, str],
    slots: int,
    hostname: str,
    version: str,
    platform_json: str = "",
) -> None:
    now = time.time()
    values = {
        "name": name,
        "labels_json": json.dumps(dict(labels), sort_keys=True),
        "slots": slots,
        "hostname": hostname,
        "version": version,
        "platform_json": platform_json,
        "connected": True,
        "connected_since": now,
        "last_seen": now,
    }
    if conn.execute(update(workers).where(workers.c.id == worker_id).values(**values)).rowcount == 0:
        conn.execute(insert(workers).values(id=worker_id, jobs_done=0, jobs_failed=0, **values))


def worker_disconnected(conn: Connection, worker_id: str) -> None:
    conn.execute(update(workers).where(workers.c.id == worker_id).values(connected=False, last_seen=time.time()))


def worker_platforms(conn: Connection) -> list[dict[str, str]]:
    """Every platform a worker has reported (netdist.platforms.Platform fields), each once."""
    rows = conn.execute(select(workers.c.platform_json).where(workers.c.platform_json != "").distinct()).scalars()
    return [json.loads(r) for r in sorted(set(rows))]


def disconnect_all_workers(conn: Connection) -> None:
    conn.execute(update(workers).values(connected=False))


def list_workers(conn: Connection) -> list[WorkerRecord]:
    return [WorkerRecord(**r._mapping) for r in conn.execute(select(*_WORKER_COLUMNS).order_by(workers.c.name))]


def resolve_worker(conn: Connection, ref: str) -> WorkerRecord:
    rows = conn.execute(select(*_WORKER_COLUMNS).where((workers.c.id.startswith(ref)) | (workers.c.name == ref))).all()
    if not rows:
        raise NotFoundError(f"no worker matches {ref!r} (by id, id prefix or name)")
    if len(rows) > 1:
        raise InvalidArgumentError(f"{ref!r} matches {len(rows)} workers: use the id")
    return WorkerRecord(**rows[0]._mapping)


# -- handler log ----------------------------------------------------------------------


def add_log(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    if entries:
        conn.execute(insert(handler_log), [dict(e) for e in entries])


def read_log(conn: Connection, handler_id: str, *, after_id: int = 0, tail: int = 0) -> list[Any]:
    stmt = select(handler_log).where(handler_log.c.handler_id == handler_id, handler_log.c.id > after_id)
    if tail:
        rows = conn.execute(stmt.order_by(handler_log.c.id.desc()).limit(tail)).all()
        return list(reversed(rows))
    return list(conn.execute(stmt.order_by(handler_log.c.id)).all())


def prune_log(conn: Connection, handler_id: str, keep: int = LOG_KEEP) -> None:
    cutoff = conn.execute(
        select(handler_log.c.id)
        .where(handler_log.c.handler_id == handler_id)
        .order_by(handler_log.c.id.desc())
        .offset(keep)
        .limit(1)
    ).scalar()
    if cutoff is not None:
        conn.execute(delete(handler_log).where(handler_log.c.handler_id == handler_id, handler_log.c.id <= cutoff))


def add_worker_counts(conn: Connection, counts: Mapping[str, tuple[int, int]]) -> None:
    """Add (done, failed) job counts per worker; the dispatcher flushes them about once a second."""
    now = time.time()
    for worker_id, (done, failed) in counts.items():
        conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(jobs_done=workers.c.jobs_done + done, jobs_failed=workers.c.jobs_failed + failed, last_seen=now)
        )


def set_worker_disabled(conn: Connection, worker_id: str, disabled: bool) -> None:
    conn.execute(update(workers).where(workers.c.id == worker_id).values(disabled=disabled))


def worker_disabled(conn: Connection, worker_id: str) -> bool:
    return bool(conn.execute(select(workers.c.disabled).where(workers.c.id == worker_id)).scalar())
