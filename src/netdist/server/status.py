"""Turn errors into gRPC statuses at the servicer boundary."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from netdist.errors import NetDistError

log = logging.getLogger("netdist.server")
ERROR_CLASS_KEY = "netdist-error"
R = TypeVar("R")


async def _abort(exc: Exception, name: str, context: grpc.aio.ServicerContext) -> NoReturn:
    """NetDistError -> its status and message; anything else -> logged, INTERNAL."""
    if isinstance(exc, NetDistError):  # the class rides along: UNAVAILABLE alone reads as "no server"
        await context.abort(exc.code, exc.message, trailing_metadata=((ERROR_CLASS_KEY, type(exc).__name__),))
    log.error("%s failed", name, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name}; see the server log")
    raise AssertionError("abort returned")


def unary(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, method.__name__, context)

    return wrapper


def streaming(method: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, method.__name__, context)

    return wrapper
