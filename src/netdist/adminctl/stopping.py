"""SIGTERM for the commands that stream until stopped (``watch``, ``events --follow``).

Python's default SIGTERM kills the process where it stands: nothing buffered
reaches a pipe or file and a terminal is left as the dashboard drew it. Inside
:func:`sigterm_ends`, SIGTERM raises :class:`TerminatedError` instead, so the
command ends in order and exits 0 (a requested end, not a failure); SIGINT
(Ctrl-C) still exits 130.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class TerminatedError(BaseException):
    """SIGTERM arrived: end in order (a BaseException, like KeyboardInterrupt, so no ``except Exception`` keeps it)."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise TerminatedError


@contextlib.contextmanager
def sigterm_ends() -> Iterator[None]:
    """SIGTERM raises TerminatedError in the body, which ends quietly; the old handler comes back after."""
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    except TerminatedError:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
