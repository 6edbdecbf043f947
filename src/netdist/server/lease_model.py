"""The values the lease table speaks: leases, results in, and the effects of its transitions.

No behaviour here beyond small helpers; see :mod:`netdist.server.leases`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple

from netdist.jobscript import JobSettings
from netdist.server.states import JobStatus

Ref = tuple[int, int]
"""(job id, lease number): names exactly one lease of one job."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReadyJob:
    """An available job as queued in memory: what a lease needs to go out."""

    job_id: int
    lease_no: int  # its current lease number; the next lease takes lease_no + 1
    attempts: int  # attempts charged so far
    input: bytes


class AckOutcome(StrEnum):
    """The answer to each result a worker sends."""

    ACCEPTED = "accepted"  # stored; it counts
    DUPLICATE = "duplicate"  # this result was stored before
    STALE = "stale"  # not the job's current lease held by this worker: dropped, nothing changed
    UNKNOWN = "unknown"  # no such job


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # for the current lease, from its holder: to be stored
    IN_FLIGHT = "in_flight"  # the same result is being stored already: its ack answers this one too
    NOT_CURRENT = "not_current"  # not this worker's current lease: the store tells duplicate, stale or unknown


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerSpec:
    """What the table needs to know of a running handler instance."""

    handler_id: str
    job_name: str
    settings: JobSettings
    script_sha256: str
    environment: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    worker_id: str
    name: str
    labels: Mapping[str, str]
    slots: int


@dataclasses.dataclass(slots=True, kw_only=True)
class Lease:
    job_id: int
    lease_no: int
    handler_id: str
    worker_id: str
    attempt: int  # attempts charged before this lease, plus one
    input: bytes
    leased_at: float  # wall time, for people
    leased_mono: float
    started_mono: float | None = None
    deadline: float | None = None  # monotonic; job timeout
    stored: bool = False  # committed to the store, so sent to the worker
    settling: bool = False  # a result for it is being stored
    cancelled: Mapping[str, str] | None = None  # ended while its write was on the way: requeued once stored
    progress_percent: float = 0.0
    progress_text: str = ""

    @property
    def ref(self) -> Ref:
        return (self.job_id, self.lease_no)


class ResultIn(NamedTuple):
    """A result as a worker sent it (a NamedTuple: built once per job, cheaply)."""

    job_id: int
    lease_no: int
    output: str | None  # JSON text, when the job succeeded
    error: Mapping[str, str] | None  # type, message, traceback
    duration_seconds: float

    @property
    def ref(self) -> Ref:
        return (self.job_id, self.lease_no)


class Settlement(NamedTuple):
    """An accepted result: how the store records it."""

    result: ResultIn
    handler_id: str
    worker_id: str
    status: JobStatus  # SUCCEEDED, ERRORED (out of attempts) or AVAILABLE (to be retried)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Requeue:
    """A lease that ended without a result: the job goes back, or fails for good when out of attempts."""

    job_id: int
    lease_no: int  # the lease ended; the job is available again at lease_no + 1
    handler_id: str
    worker_id: str
    charged: bool  # the lease had started: it costs an attempt
    final: bool  # out of attempts: the job is errored
    error: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    worker_id: str
    refs: tuple[Ref, ...]
    reason: str


@dataclasses.dataclass(slots=True)
class Effects:
    """What a transition asks of the caller: store writes, messages, wake-ups."""

    requeues: list[Requeue] = dataclasses.field(default_factory=list)
    revocations: list[Revocation] = dataclasses.field(default_factory=list)
    streaks: dict[str, int] = dataclasses.field(default_factory=dict)  # handler -> failed in a row, to store
    failing: dict[str, int] = dataclasses.field(default_factory=dict)  # handlers that reached max-sequenced-errors
    wake: set[str] = dataclasses.field(default_factory=set)  # handlers with results or failures to process
    silent: list[str] = dataclasses.field(default_factory=list)  # connected workers that stopped talking

    def revoke(self, leases: Sequence[Lease], reason: str) -> None:
        by_worker: dict[str, list[Ref]] = {}
        for lease in leases:
            if lease.stored:  # an unsent lease is not the worker's to stop
                by_worker.setdefault(lease.worker_id, []).append(lease.ref)
        self.revocations += [Revocation(worker_id=w, refs=tuple(r), reason=reason) for w, r in by_worker.items()]
