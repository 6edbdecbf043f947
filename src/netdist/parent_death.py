"""A child process that ends with its parent, ``kill -9`` of the parent included.

Handler hosts (started by the server) and executor children (started by the
worker) call :func:`exit_with_parent` first thing, with the pid their parent
passed on the command line (:func:`child_args`, read back by
:func:`parent_pid_from`).

On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` kills the
child the moment its parent goes, even when the child's own code hangs while
holding the GIL. The parent may have died before the prctl call, so the child
then compares ``getppid()`` with the pid its parent passed and exits if they
differ. Elsewhere a daemon thread polls ``getppid()`` every
:data:`POLL_INTERVAL_SECONDS`.

Mind that the kernel sends the signal when the *thread* that started the child
ends, not the whole process: a parent must start these children from a thread
that lives as long as it does. Both netdist parents start them from their
event loop, which runs in the main thread (``asyncio.run`` in the worker's
``cli.py``, uvloop's or asyncio's in the server's: :mod:`netdist.server.event_loop`;
both fork in the loop's own thread).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Literal

PARENT_PID_FLAG = "--parent-pid"
POLL_INTERVAL_SECONDS = 0.2
"""Where prctl is unavailable: how often the fallback thread checks the parent."""
EXIT_CODE = 1
"""The exit code of a child that finds its parent gone (under prctl it is SIGKILL instead)."""

_PR_SET_PDEATHSIG = 1


def child_args() -> list[str]:
    """Command-line arguments a parent adds for its child: its own pid."""
    return [PARENT_PID_FLAG, str(os.getpid())]


def parent_pid_from(argv: Sequence[str]) -> int | None:
    """The pid :func:`child_args` put in ``argv``; None when it is absent or not a number."""
    for flag, value in itertools.pairwise(argv):
        if flag == PARENT_PID_FLAG:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def exit_with_parent(expected_parent: int | None, *, prctl: bool = True) -> Literal["pdeathsig", "poll"]:
    """End this process when its parent ends; returns the mechanism in use.

    ``expected_parent`` is the pid the parent passed. Without one, the parent
    at this moment is taken, which misses a parent that died before now.
    Exits at once (code :data:`EXIT_CODE`) when the parent is already gone.
    ``prctl=False`` takes the portable fallback (for its tests).
    """
    parent = os.getppid() if expected_parent is None else expected_parent
    if prctl and _set_pdeathsig(signal.SIGKILL):
        _exit_unless_parent(parent)  # it may have died before prctl took effect
        return "pdeathsig"
    _exit_unless_parent(parent)
    threading.Thread(target=_poll, args=(parent,), name="netdist-parent-watch", daemon=True).start()
    return "poll"


def _exit_unless_parent(parent: int) -> None:
    if os.getppid() != parent:
        os._exit(EXIT_CODE)


def _poll(parent: int) -> None:
    while True:
        time.sleep(POLL_INTERVAL_SECONDS)
        _exit_unless_parent(parent)


def _set_pdeathsig(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, signum) through libc; False where there is none."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return bool(prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
