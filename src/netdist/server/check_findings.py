"""What ``netdist-server check`` finds: the kinds of problem, one problem, and the report."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any


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
