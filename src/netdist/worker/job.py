"""The values the worker passes around inside: leases, jobs, results, progress, acks.

Protobuf types stop at the connection; the session, the ledger, the executor
and the cache see only these. The ones built once per job (JobRef, Lease, Job,
JobResult, Ack) are NamedTuples: as immutable as a frozen dataclass and about
four times cheaper to build, which counts at thousands of jobs a second.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import NamedTuple


class JobRef(NamedTuple):
    """One lease of one job (a tuple: cheap to build, hash and compare on the hot path)."""

    job_id: int
    lease_no: int

    def __str__(self) -> str:
        return f"{self.job_id}/{self.lease_no}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """The code a job runs with: one job script plus unpacked wheels (package first)."""

    script_sha256: str
    script_path: Path
    wheel_sha256s: tuple[str, ...] = ()
    wheel_dirs: tuple[Path, ...] = ()
    script_generation: int = 0
    """Grows each time the cache repairs the script: a child that loaded it before may hold damaged code."""
    wheels_generation: int = 0
    """Grows each time the cache repairs one of the wheels' trees (the same, for the code they hold)."""

    @property
    def wheels_key(self) -> tuple[tuple[str, ...], int]:
        """Children are bound to this: other wheels (or repaired ones) mean another process."""
        return (self.wheel_sha256s, self.wheels_generation)


class Lease(NamedTuple):
    """A job as the server leased it: its code named by hash, maybe not on disk yet."""

    ref: JobRef
    handler_id: str
    job_name: str
    attempt: int
    script_sha256: str
    wheel_sha256s: tuple[str, ...] = ()
    """The environment's wheels, package first."""
    input_json: bytes = b""
    timeout_seconds: float = 0.0
    script_name: str = ""
    """The job script's file name as uploaded (tracebacks show it); empty: the cache path."""

    def job(self, environment: Environment, input_json: bytes) -> Job:
        """The job to run, once its environment is cached and its input is one line."""
        return Job(  # positional, in Job's order: this runs for every job, and keywords cost twice as much
            self.ref,
            self.handler_id,
            self.job_name,
            self.attempt,
            environment,
            input_json,
            self.timeout_seconds,
            self.script_name,
        )


class Job(NamedTuple):
    """A leased job whose artifacts are on disk, ready for a child."""

    ref: JobRef
    handler_id: str
    job_name: str
    attempt: int
    environment: Environment
    input_json: bytes
    """The job's input as the lease carried it: JSON text, passed to the child unparsed."""
    timeout_seconds: float = 0.0
    script_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """Why a job failed: data, never a crash."""

    type: str
    message: str
    traceback: str = ""


class JobResult(NamedTuple):
    """The outcome of one lease: JSON output text (bytes, as the child encoded it) or an error."""

    ref: JobRef
    output_json: bytes | None = None
    error: JobError | None = None
    duration_seconds: float = 0.0

    @classmethod
    def failed(
        cls,
        ref: JobRef,
        type_: str,
        message: str,
        *,
        traceback: str = "",
        duration_seconds: float = 0.0,
    ) -> JobResult:
        error = JobError(type=type_, message=message, traceback=traceback)
        return cls(ref=ref, error=error, duration_seconds=duration_seconds)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress:
    """The latest progress a running job reported."""

    ref: JobRef
    percent: float
    text: str = ""


LogLine = tuple[float, str, str]
"""One line a job logged: (Unix time, level, text)."""


class JobLog(NamedTuple):
    """Lines one lease of a job logged, and how many more it logged past the bound (dropped)."""

    ref: JobRef
    lines: tuple[LogLine, ...]
    dropped: int = 0


class AckOutcome(enum.StrEnum):
    """What the server did with a result; every outcome lets the worker forget it."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """The job already had a result."""
    UNKNOWN = "unknown"
    """No such job (its handler was removed)."""
    STALE = "stale"
    """Not the job's current lease held by this worker (expired, revoked or re-leased)."""
    UNSPECIFIED = "unspecified"


class Ack(NamedTuple):
    """The server's answer to one result."""

    ref: JobRef
    outcome: AckOutcome
