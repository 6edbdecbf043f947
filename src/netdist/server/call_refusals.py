"""Count the calls the server refused, by method and status, for the metrics.

The outermost interceptor: it sees the status every call ends with, whoever
set it (the auth interceptor refusing a token, the decode guard refusing
bytes that are not protobuf, a servicer raising a NetDistError, a revoked
token ending a stream). It counts once per call, never per message, so the
worker stream costs nothing here.

Not counted: OK, and the endings a client chose (CANCELLED, its own
DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from netdist.server.auth import METHOD_ROLES, OPEN_METHODS

UNKNOWN_METHOD = "other"
"""The method label of a call to a method the server does not serve (a client's name is not a label)."""

_NOT_REFUSALS = frozenset({grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})
_KNOWN = {path: path.rsplit(".", 1)[-1] for path in (*METHOD_ROLES, *OPEN_METHODS)}
"""``/netdist.api.v1.AdminService/ListJobs`` -> ``AdminService/ListJobs``."""


def method_label(path: str) -> str:
    return _KNOWN.get(path, UNKNOWN_METHOD)


class CallRefusals(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """``counts``: (method label, status name in lower case) -> calls that ended so."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def note(self, method: str, code: grpc.StatusCode | None) -> None:
        if code is not None and code not in _NOT_REFUSALS:
            self.counts[(method, code.name.lower())] += 1

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        method = method_label(details.method)
        if handler is None:  # grpc answers UNIMPLEMENTED itself (the auth interceptor refuses first)
            self.note(method, grpc.StatusCode.UNIMPLEMENTED)
            return handler
        kind = ("stream" if handler.request_streaming else "unary") + (
            "_stream" if handler.response_streaming else "_unary"
        )
        behaviour = getattr(handler, kind)
        if inspect.isasyncgenfunction(behaviour):
            return handler._replace(**{kind: self._streamed(method, behaviour)})
        if inspect.iscoroutinefunction(behaviour):
            return handler._replace(**{kind: self._answered(method, behaviour)})
        return handler  # a synchronous servicer: none of ours

    def _answered(self, method: str, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def answered(request: Any, context: grpc.aio.ServicerContext) -> Any:
            escaped = None
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception:
                escaped = grpc.StatusCode.UNKNOWN  # what grpc answers for an error that escapes a servicer
                raise
            finally:
                self.note(method, escaped or context.code())

        return answered

    def _streamed(self, method: str, behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            escaped = None
            try:
                async for item in behaviour(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception:
                escaped = grpc.StatusCode.UNKNOWN
                raise
            finally:
                self.note(method, escaped or context.code())

        return streamed
