"""When a call that waits for handler hosts to come up answers at the latest."""

from __future__ import annotations

import asyncio
import math

import grpc

REPLY_MARGIN_SECONDS = 1.0
"""A call that waits for a handler host to come up (a start, a package upload that moves handlers)
answers this long before the caller's deadline: time for reading what it answers with and for the
reply's trip."""


def answer_by(context: grpc.aio.ServicerContext) -> float:
    """The event loop's time to answer by: REPLY_MARGIN_SECONDS before the caller's deadline, if it set one."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return math.inf
    return asyncio.get_running_loop().time() + remaining - REPLY_MARGIN_SECONDS
