"""Facts about the machine a worker runs on: identity for Hello, load for Heartbeat."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import platform
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import IO

from netdist.atomic_file import write_atomically

log = logging.getLogger(__name__)

_WORKER_ID_FILE = "worker-id"
_CREDENTIAL_SUFFIX = ".credential"
_RESULTS_SUFFIX = ".results"


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
    return HostLoad(cpu_percent=cpu, memory_percent=memory_percent(), disk_free_bytes=free)


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


_MAX_SEATS = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSeat:
    """A worker id claimed for the life of this process (the lock is held while ``lock`` is open)."""

    worker_id: str
    lock: IO[str]
    credential_path: Path | None = None
    """Where this seat keeps the credential the server bound to its id (next to the id, mode 0600)."""
    results_path: Path | None = None
    """Where this seat keeps the results the server has not acknowledged between runs (worker/result_file.py)."""


def claim_worker_id(cache_dir: Path) -> WorkerSeat:
    """The first worker id in ``cache_dir`` no running worker holds.

    Workers on one machine may share a cache dir (the artifacts are
    content-addressed): each takes a seat (``worker-id``, ``worker-id.2``, ...)
    with an exclusive lock, so each keeps its own stable id across restarts and
    two never connect under the same one.
    """
    for seat in range(1, _MAX_SEATS + 1):
        name = _WORKER_ID_FILE if seat == 1 else f"{_WORKER_ID_FILE}.{seat}"
        lock = (cache_dir / f"{name}.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        worker_id = load_worker_id(cache_dir, name)
        return WorkerSeat(
            worker_id, lock, cache_dir / f"{name}{_CREDENTIAL_SUFFIX}", cache_dir / f"{name}{_RESULTS_SUFFIX}"
        )
    raise OSError(f"more than {_MAX_SEATS} workers share {cache_dir}")


def load_worker_id(cache_dir: Path, name: str = _WORKER_ID_FILE) -> str:
    """A stable id: a uuid4 hex kept in ``cache_dir/NAME``, made on first run."""
    path = cache_dir / name
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) == 32 and all(c in "0123456789abcdef" for c in existing):
        return existing
    worker_id = uuid.uuid4().hex
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}-")
    with os.fdopen(fd, "w") as stream:
        stream.write(worker_id + "\n")
    os.replace(tmp, path)
    if existing:
        log.warning("replaced the unreadable worker id in %s", path)
    return worker_id


def load_credential(path: Path) -> str:
    """The credential kept at ``path``; '' when there is none yet (a first join)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def save_credential(path: Path, credential: str) -> None:
    """Keep a credential the server issued, readable by this user alone (created 0600, then renamed in place)."""
    write_atomically(path, (credential + "\n").encode(), 0o600)
