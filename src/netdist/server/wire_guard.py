"""Requests that are not valid protobuf get INVALID_ARGUMENT, not UNKNOWN, and no traceback.

gRPC decodes a request with the message type's ``FromString``; when the bytes
are not that message it answers UNKNOWN ("Unexpected DecodeError") on its
own. This interceptor decodes first, with a deserializer that never raises:
an undecodable unary request is refused with INVALID_ARGUMENT naming the
message type, and a stream ends at its first undecodable message and is then
refused the same way. Found by the fuzz suite (tests/fuzz).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("netdist.server.wire")


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    return decode


async def _refuse(context: grpc.aio.ServicerContext, method: str, reason: str) -> None:
    log.debug("%s: undecodable request: %s", method, reason)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request to {method} is not a valid protobuf message of its type ({reason[:200]})",
    )


class _Stream:
    """A request stream that ends at the first undecodable message and remembers why."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.problem: str | None = None

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        if self.problem is not None:
            raise StopAsyncIteration
        request = await anext(self._requests)
        if isinstance(request, _Undecodable):
            self.problem = request.reason
            raise StopAsyncIteration
        return request


def _guard_unary_request(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse(context, method, request.reason)
            async for response in behaviour(request, context):
                yield response

        return stream_out

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(context, method, request.reason)
        return await behaviour(request, context)

    return call


def _guard_request_stream(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def stream_out(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            stream = _Stream(requests)
            async for response in behaviour(stream, context):
                yield response
            if stream.problem is not None:
                await _refuse(context, method, stream.problem)

        return stream_out

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        stream = _Stream(requests)
        result = await behaviour(stream, context)
        if stream.problem is not None:
            await _refuse(context, method, stream.problem)
        return result

    return call


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method.rsplit("/", 2)[-2:]
        name = "/".join(part.rsplit(".", 1)[-1] for part in method)
        kind = (
            ("stream" if handler.request_streaming else "unary")
            + "_"
            + ("stream" if handler.response_streaming else "unary")
        )
        behaviour = getattr(handler, kind)
        guard = _guard_request_stream if handler.request_streaming else _guard_unary_request
        return handler._replace(
            request_deserializer=_safe(handler.request_deserializer), **{kind: guard(name, behaviour)}
        )
