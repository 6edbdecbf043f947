"""gRPC's fork handlers, turned off before grpc is imported, so that the server's children start safely.

The server runs on uvloop (:mod:`netdist.server.event_loop`), which starts child
processes (handler hosts, job script checks, dependency resolution) with ``fork``,
where Python's own ``subprocess`` takes ``vfork``. ``fork`` runs the handlers gRPC
registers for it, which run gRPC's machinery in the child while other threads of
the server were in it: the child died of SIGSEGV before it ran our code, and the
job script checker did not start in 6 servers of 16 (bench/README.md, 2026-12-07).
The server's children never use gRPC (they ``exec`` at once), so the handlers are
turned off. gRPC reads the setting as it is imported: :mod:`netdist.server` calls
:func:`no_grpc_fork_handlers` first thing, and the event loop is uvloop's only if
that took effect.
"""

from __future__ import annotations

import os
import sys

SETTING = "GRPC_ENABLE_FORK_SUPPORT"


class _Handlers:
    off = False
    """Turned off in this process before grpc was imported."""


def no_grpc_fork_handlers() -> None:
    """Turn gRPC's fork handlers off for this process; effective only before grpc is imported."""
    if "grpc" not in sys.modules:
        os.environ[SETTING] = "0"  # an operator's "1" too: with it, the server's children may crash
        _Handlers.off = True


def handlers_off() -> bool:
    """gRPC runs nothing in a forked child of this process."""
    return _Handlers.off
