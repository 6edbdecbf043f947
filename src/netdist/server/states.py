"""The states of handlers and jobs, as stored.

On Python 3.11 the enum metaclass has a ``__getattr__``, which sends every read of a member off its
class (``JobStatus.LEASED``) down a slow path: 83 ns here, against 8 ns for a local name. The loops that
run for every job read the members they need once, before the loop (or at import, for a function called
per job), and use the names they bound; 3.12 dropped that ``__getattr__``.
"""

from __future__ import annotations

from enum import StrEnum


class HandlerState(StrEnum):
    IDLE = "idle"  # uploaded, never started
    RUNNING = "running"
    PAUSED = "paused"  # hands out nothing; outstanding leases stay
    STOPPED = "stopped"  # hands out nothing; outstanding leases revoked
    DISABLED = "disabled"  # does not start (manually, by schedule or auto-start) until enabled
    FINISHED = "finished"
    FAILED = "failed"  # the message says why; start or enable to try again


class JobStatus(StrEnum):
    AVAILABLE = "available"
    LEASED = "leased"
    SUCCEEDED = "succeeded"  # result stored, not yet processed by the handler
    ERRORED = "errored"  # failed for good, process_failure not yet called
    PROCESSED = "processed"
    FAILED = "failed"  # failed for good, process_failure called
