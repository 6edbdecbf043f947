"""Large buffers go back to the operating system when they are freed (glibc's malloc).

glibc serves a request of 128 KiB or more with its own ``mmap`` and unmaps it
on free, but each such free raises that threshold (up to 32 MiB) so that later
requests of that size come from the heap, where the freed memory mostly stays.
An upload arrives as a stream of 256 KiB chunks, freed as soon as they are on
disk: with the moving threshold a 200 MB upload grew the server by 12 to 31 MiB
on a quiet machine and 56 MiB on a loaded one (CI); with the threshold pinned
at 128 KiB before the server's imports it grows by 9 to 11 MiB (pinned only
when ``serve`` starts: 13 to 22 MiB, so :mod:`netdist.server` pins it first). Setting it
with ``mallopt`` pins it (glibc then stops adjusting it); the trim threshold,
which glibc moved along with it, is set back too. Elsewhere (musl, macOS) this
does nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("netdist.server")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
THRESHOLD_BYTES = 128 * 1024  # glibc's defaults for both, before it moves them


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc to tell."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, no library search
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Both: the moving threshold has raised the trim threshold with it by now (Python's start-up
    # freed large blocks), and a high trim threshold keeps freed heap memory too.
    if mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) != 1 or mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) != 1:
        log.debug("mallopt refused; large buffers may stay in the heap")
        return False
    return True
