"""glibc malloc kept from handing large buffers' pages back to the kernel at every free.

A job's input or output of a megabyte crosses the server as several buffers of that size or more
(gRPC's copy, protobuf's, the store's, the handler host's JSON line of a batch). With glibc's
defaults the freed ones go back to the kernel (strace: 3,000 munmap and 2,000 brk calls in 4 s of
bench/scale.py payload), and the next ones fault their pages in anew, 4 KiB at a time: 3.3
million page faults on the server for 300 jobs of 1 MiB each way. Keeping 64 MiB at the top of the
heap (``M_TOP_PAD``) took that to 1.3 million, the server's CPU from 12 to 8 seconds and the
payload run from 48 to 58-61 MB/s. Small jobs do not move: Python keeps their objects itself.

The server sets it (netdist-server serve). Not the worker's executor child: under
``--max-job-memory`` (RLIMIT_DATA) the pad counts against the job's limit, and a job that fitted
would fail with MemoryError.

Only on glibc (other C libraries have neither the call nor the behaviour); never fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform

M_TOP_PAD = -2  # glibc's <malloc.h>
TOP_PAD_BYTES = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep TOP_PAD_BYTES at the top of its heap; whether it was set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None).mallopt(M_TOP_PAD, TOP_PAD_BYTES))
    return False
