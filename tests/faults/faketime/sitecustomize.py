"""Imported at start-up by a server the fault tests run under libfaketime (it is put
first on that server's PYTHONPATH; see tests/faults/test_clock.py).

- libfaketime 0.9.10 fails ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``
  with EINVAL when it leaves the monotonic clock real
  (FAKETIME_DONT_FAKE_MONOTONIC=1), and that is how CPython's ``time.sleep``
  sleeps: sleep on ``select`` with a relative timeout instead.
- The jump is the server's own: handler hosts and other children start on
  the real clock (they inherit the environment without the preload).
"""

from __future__ import annotations

import os
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep  # type: ignore[assignment]
os.environ.pop("LD_PRELOAD", None)
