"""One server per data dir: an exclusive lock on ``server.lock`` in it, held for the server's life.

Two servers on one data dir (and so, by default, one SQLite file) each ran the same handlers and leased
the same jobs: each refused the other's results as stale ("the store refused N results the lease table
accepted"), and stopping one failed the handler the other ran. The second now refuses to start.

The lock is ``flock``: the kernel lets go of it when the process ends, ``kill -9`` included, so a crashed
server leaves nothing to clean up, and the file (which names the holder's pid) may stay. The file is
opened close-on-exec, so the handler hosts the server starts do not hold it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from netdist.errors import DataDirInUseError

LOCK_FILE = "server.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take ``data_dir``'s lock, or raise DataDirInUseError naming the holder's pid. Keep the returned
    file open while the server runs: closing it lets go of the lock."""
    lock = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = "".join(c for c in lock.read(64) if c.isdigit())  # our own pid line; nothing else shown
        lock.close()
        raise DataDirInUseError(
            f"--data-dir {data_dir} is in use by another netdist server"
            f"{f' (pid {holder})' if holder else ''}: stop it first, or give this one its own --data-dir"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
