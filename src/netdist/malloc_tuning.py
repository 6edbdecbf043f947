"""glibc malloc kept from handing large buffers' pages back to the kernel at every free.

A job's input or output of a megabyte crosses the server as several buffers of that size or more
(gRPC's copy, protobuf's, the store's, the handler host's JSON line of a batch). With glibc's
defaults the freed ones go back to the kernel (strace: 3,000 munmap and 2,000 brk calls in 4 s of
bench/scale.py payload), and the next ones fault their pages in anew, 4 KiB at a time: 3.3
million page faults on the server for 300 jobs of 1 MiB each way.

Two settings together: buffers up to 32 MiB (glibc's largest threshold on 64-bit) come from the
heap instead of a mapping of their own (``M_MMAP_THRESHOLD``), and the heap keeps 64 MiB at its top
when it shrinks (``M_TOP_PAD``). Either alone can make it worse: in a pattern like the executor
child's (a 10 MiB JSON text made and parsed in turn), 262,000 and 163,000 page faults against
glibc's 102,000; both, none. On the server the pad alone took the payload run's faults to 1.3
million, and both to 264,000; its CPU went from 12 to 8, then 6.4 seconds, and the run from 48 to
56-60, then 70-72 MB/s (bench/README.md). Small jobs do not move: Python keeps their objects itself.
A process can keep up to the pad of freed memory, and buffers it freed below the heap's top.

The server sets it (netdist-server serve), and so does the worker's executor child, which parses
each job's input and encodes its output, unless the worker runs with ``--max-job-memory``: under
that data limit (RLIMIT_DATA) the pad would count against the job's memory, and a job that fitted
would fail with MemoryError.

Only on glibc (other C libraries have neither the call nor the behaviour); never fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform

M_TOP_PAD = -2  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
TOP_PAD_BYTES = 64 * 1024 * 1024
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Ask glibc malloc to serve buffers up to MMAP_THRESHOLD_BYTES from its heap and keep
    TOP_PAD_BYTES at the heap's top; whether both were set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        threshold = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        return threshold and bool(mallopt(M_TOP_PAD, TOP_PAD_BYTES))
    return False
