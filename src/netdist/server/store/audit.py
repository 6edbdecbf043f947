"""The audit log as stored: append, read newest first, keep the newest N."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from netdist.server.store.schema import audit_log

KEEP = 100_000


def add(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    if entries:
        conn.execute(insert(audit_log), [dict(e) for e in entries])


def newest(conn: Connection, *, since: float, limit: int) -> list[Any]:
    """Entries at or after ``since``, newest first."""
    return list(
        conn.execute(
            select(audit_log).where(audit_log.c.at >= since).order_by(audit_log.c.id.desc()).limit(limit)
        ).all()
    )


def prune(conn: Connection, keep: int = KEEP) -> None:
    cutoff = conn.execute(select(audit_log.c.id).order_by(audit_log.c.id.desc()).offset(keep).limit(1)).scalar()
    if cutoff is not None:
        conn.execute(delete(audit_log).where(audit_log.c.id <= cutoff))
