"""In-memory view of what the dispatcher hands out: sessions, leases, handler queues.

The store is the source of truth; these mirror it for speed and are rebuilt
from it after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping

from netdist.api.v1 import jobs_pb2
from netdist.jobscript import JobSettings
from netdist.server.store.jobs import ReadyJob


@dataclasses.dataclass(slots=True, kw_only=True)
class LeaseRecord:
    job_id: int
    lease_no: int
    handler_id: str
    worker_id: str
    input: bytes
    leased_at: float
    deadline: float | None  # job timeout
    attempt: int
    progress_percent: float = 0.0
    progress_text: str = ""

    @property
    def ref(self) -> tuple[int, int]:
        return (self.job_id, self.lease_no)


@dataclasses.dataclass(slots=True, kw_only=True)
class Session:
    """One connected worker stream."""

    worker_id: str
    name: str
    labels: Mapping[str, str]
    slots: int
    outbox: asyncio.Queue[jobs_pb2.ServerMessage | None]
    credit: int = 0
    connected_at: float = dataclasses.field(default_factory=time.time)
    last_seen: float = dataclasses.field(default_factory=time.monotonic)
    leases: set[int] = dataclasses.field(default_factory=set)
    per_handler: Counter[str] = dataclasses.field(default_factory=Counter)
    done: int = 0  # results accepted since the last flush to the store
    failed: int = 0
    closed: bool = False

    def send(self, message: jobs_pb2.ServerMessage) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)


@dataclasses.dataclass(slots=True, kw_only=True)
class HandlerSlot:
    """A handler instance as the dispatcher sees it."""

    handler_id: str
    job_name: str
    settings: JobSettings
    script_sha256: str
    environment: list[str]
    on_change: Callable[[], None]  # wakes the handler's runtime
    active: bool = False  # running: may hand out jobs
    ready: deque[ReadyJob] = dataclasses.field(default_factory=deque)
    queued: set[int] = dataclasses.field(default_factory=set)  # ids in ``ready``
    cursor: int = 0  # highest job id loaded from the store
    more_in_store: bool = True
    refilling: bool = False
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    pass_value: float = 0.0

    def push_front(self, job: ReadyJob) -> None:
        if job.job_id not in self.queued:
            self.queued.add(job.job_id)
            self.ready.appendleft(job)

    def pop(self) -> ReadyJob | None:
        while self.ready:
            job = self.ready.popleft()
            if job.job_id in self.queued:
                self.queued.discard(job.job_id)
                return job
        return None

    def discard(self, job_id: int) -> None:
        self.queued.discard(job_id)  # lazily skipped by pop()
