"""The server's event loop: uvloop's where it is installed and safe, else asyncio's own.

At one job in flight a job's way crosses the server's loop four times (the
handler's new job, its lease, its result, the handler's call), and each crossing
is mostly the loop waking up and handing over, which uvloop does in C. In
alternating runs against asyncio's loop (bench/README.md, 2026-12-07) the round
trip p50 was 1.26 against 1.37 ms (8 pairs) and throughput 1.055 times asyncio's
(20 pairs). The worker stays on asyncio's loop: on uvloop its CPU rose 3-9% and
its share of the round trip did not move.

uvloop is not on Windows; there, and where gRPC was imported before its fork
handlers could be turned off (:mod:`netdist.server.grpc_fork`), asyncio's loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from netdist.server.grpc_fork import handlers_off

try:
    import uvloop
except ImportError:  # Windows: not installed
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when it is installed and the server's children are safe to start."""
    if uvloop is not None and handlers_off():
        return uvloop.run(main)
    return asyncio.run(main)
