"""The exit codes of netdist-server, netdist-worker and netdist-admin: one set for the three.

docs/cli.md lists them in a table; tests/e2e/test_exit_codes.py holds the
table and this enum together and runs a real command that ends with each code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Done; the worker also after a graceful stop; ``check``: the store is sound; ``watch`` and ``events
    --follow`` also when ended by SIGTERM."""
    FAILED = 1
    """Refused or failed: the server said no, a handler failed as ``handlers start`` started it, ``check`` found
    a problem, a file could not be written."""
    USAGE = 2
    """A bad command line or local input: an unknown option, a missing or bad file, a bad URL or data dir."""
    UNAVAILABLE = 3
    """The server cannot be reached, or the store (the database) cannot be opened."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT), or a second SIGINT/SIGTERM during a worker's graceful stop."""
