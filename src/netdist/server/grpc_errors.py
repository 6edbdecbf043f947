"""Turn errors into gRPC statuses at the servicer boundary: one decorator for every kind of method.

``@to_status`` goes on each servicer method, whatever its shape: unary or
streaming requests (a request, or an iterator of them), a unary answer
(``async def`` returning it, or writing with ``context.write`` as
``JobService.Connect`` does), or a streamed one (an ``async def`` that
yields). A NetDistError becomes its code and message, with its class name in
the trailing metadata; anything else is logged with its traceback and
answered INTERNAL.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, overload

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


@overload
def to_status(method: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]: ...


@overload
def to_status(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]: ...


def to_status(method: Callable[..., Any]) -> Callable[..., Any]:
    """Answer what ``method`` raises with a status (see the module's docstring)."""
    name = method.__name__
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streamed(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(exc, name, context)

        return streamed

    @functools.wraps(method)
    async def answered(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, name, context)

    return answered
