"""The worker's configuration: built by the CLI, read by everything else."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from netdist.channel import ClientSecurity
from netdist.ziplimit import DEFAULT_MAX_UNPACKED_BYTES


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """What ``netdist-worker connect`` was told."""

    target: str
    """The server's ``host:port``."""
    name: str
    slots: int
    cache_dir: Path
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    max_prefetch: int = 4096
    grace_seconds: float = 30.0
    max_job_memory_mb: int | None = None
    """Each executor child caps its data size (RLIMIT_DATA) to this; None: no cap."""
    capture_output: bool = False
    """What jobs print to stdout and stderr goes to the server's job log too, not only to the worker's stderr."""
    security: ClientSecurity = dataclasses.field(default_factory=ClientSecurity)
    """The worker token and TLS settings its channel is opened with."""
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    """Most bytes one wheel may unpack to in the cache."""
