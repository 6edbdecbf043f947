"""Facts about the machine a worker runs on: identity for Hello, load for Heartbeat."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

_WORKER_ID_FILE = "worker-id"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    hostname: str
    pid: int
    platform: str
    python_version: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostLoad:
    cpu_percent: float
    memory_percent: float
    disk_free_bytes: int


def host_facts() -> HostFacts:
    return HostFacts(
        hostname=socket.gethostname(),
        pid=os.getpid(),
        platform=platform.platform(),
        python_version=platform.python_version(),
    )


def host_load(disk_path: Path) -> HostLoad:
    """CPU from the 1-minute load average, memory from /proc/meminfo, free disk at ``disk_path``."""
    try:
        cpu = os.getloadavg()[0] / (os.cpu_count() or 1) * 100.0
    except OSError:
        cpu = 0.0
    try:
        free = shutil.disk_usage(disk_path).free
    except OSError:
        free = 0
    return HostLoad(
        cpu_percent=cpu, memory_percent=memory_percent(), disk_free_bytes=free
    )


def memory_percent(meminfo: Path = Path("/proc/meminfo")) -> float:
    """Used memory in percent (MemTotal - MemAvailable); 0.0 where /proc is missing."""
    values: dict[str, int] = {}
    try:
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                values[key] = int(fields[0])
    except OSError:
        return 0.0
    total = values.get("MemTotal", 0)
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return 0.0 if total <= 0 else (total - available) / total * 100.0


def load_worker_id(cache_dir: Path) -> str:
    """The worker's stable id: a uuid4 hex kept in ``cache_dir/worker-id``, made on first run."""
    path = cache_dir / _WORKER_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) == 32 and all(c in "0123456789abcdef" for c in existing):
        return existing
    worker_id = uuid.uuid4().hex
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".worker-id-")
    with os.fdopen(fd, "w") as stream:
        stream.write(worker_id + "\n")
    os.replace(tmp, path)
    if existing:
        log.warning("replaced the unreadable worker id in %s", path)
    return worker_id
