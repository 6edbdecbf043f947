"""Who may call what: the method -> role table, the check on every call, ``identify``.

Every call is checked once, when it starts (never per message of a stream),
by :class:`AuthInterceptor`: the caller's ``authorization: Bearer TOKEN`` is
looked up in the server's :class:`~netdist.server.tokens.TokenCache`, then its
role against :data:`METHOD_ROLES`. No token, or one the server does not know
(never made, or revoked): UNAUTHENTICATED. A known token whose role may not
call the method: PERMISSION_DENIED. A method missing from the table is refused
to every role (deny by default). Each refusal says which token to give.

- gRPC health (Check, Watch) is open without a token, for probes and load
  balancers; health's List, like reflection, needs a token of any role (both
  tell what the server serves).
- ``admin`` may call everything; ``worker`` the job stream and blob fetches;
  ``viewer`` the read-only admin calls.

A stream lives as long as its token: when the token is revoked, the stream is
ended with UNAUTHENTICATED. A servicer that can end its stream in order (the
worker stream closes its outbox) says how with :func:`on_revoked`; any other
stream is cancelled. Servicers learn who called with :func:`identify`.

Why an interceptor and not the servicer decorator of grpc_errors.py: it sees
every method of every service (health and reflection included) before a
handler runs, so a method nobody listed is refused without its servicer's help.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from netdist.errors import UnauthenticatedError
from netdist.server.tokens import KnownToken, Role, TokenCache

log = logging.getLogger("netdist.server.auth")

CLOSE_SECONDS = 2.0
"""How long a stream whose token was revoked gets to end in order before it is cancelled."""

_ADMIN, _WORKER, _VIEWER = (
    frozenset({Role.ADMIN}),
    frozenset({Role.ADMIN, Role.WORKER}),
    frozenset({Role.ADMIN, Role.VIEWER}),
)
_ANY = frozenset(Role)


def _service(name: str, roles: Mapping[str, frozenset[Role]]) -> dict[str, frozenset[Role]]:
    return {f"/{name}/{method}": allowed for method, allowed in roles.items()}


OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Served without a token: liveness probes."""

METHOD_ROLES: Mapping[str, frozenset[Role]] = {
    **_service("netdist.api.v1.JobService", {"Connect": _WORKER}),
    **_service(
        "netdist.api.v1.PackageService", {"Fetch": _WORKER, "List": _VIEWER, "Upload": _ADMIN, "Remove": _ADMIN}
    ),
    **_service(
        "netdist.api.v1.AdminService",
        {
            "GetStatus": _VIEWER,
            "ListHandlers": _VIEWER,
            "GetHandler": _VIEWER,
            "GetHandlerLog": _VIEWER,
            "GetJobLog": _VIEWER,
            "ListJobs": _VIEWER,
            "GetJob": _VIEWER,
            "ListWorkers": _VIEWER,
            "ListAudit": _VIEWER,
            "Watch": _VIEWER,
            "GetJobScriptDeps": _VIEWER,
            "AddJobScript": _ADMIN,
            "ControlHandler": _ADMIN,
            "RemoveWorker": _ADMIN,
            "DisableWorker": _ADMIN,
            "EnableWorker": _ADMIN,
        },
    ),
    **_service("grpc.health.v1.Health", {"List": _ANY}),
    **_service("grpc.reflection.v1alpha.ServerReflection", {"ServerReflectionInfo": _ANY}),
    **_service("grpc.reflection.v1.ServerReflection", {"ServerReflectionInfo": _ANY}),
}
"""Method -> the roles that may call it. What is not here is refused to every role."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who made a call: the token's name and role, and the peer's address as the server saw it."""

    name: str
    role: Role
    peer: str = ""


@dataclasses.dataclass(slots=True)
class _Call:
    token: KnownToken
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("netdist_call", default=None)


def identify(context: grpc.aio.ServicerContext) -> Principal:
    """Who made this call (for the audit log and upload provenance)."""
    call = _CALL.get()
    if call is None:
        raise UnauthenticatedError("this call carried no token the server checked")
    return Principal(name=call.token.name, role=call.token.role, peer=context.peer())


def on_revoked(context: grpc.aio.ServicerContext, close: Callable[[], None]) -> None:
    """Have ``close`` end this call's stream in order if its token is revoked (else it is cancelled)."""
    call = _CALL.get()
    if call is not None:
        call.closers.append(close)


def advice(roles: frozenset[Role]) -> str:
    """What a refused caller should do, for the methods open to ``roles``."""
    if Role.WORKER in roles:
        return "give a worker token: netdist-worker --token-file FILE or NETDIST_WORKER_TOKEN"
    if Role.VIEWER in roles:
        return "give a viewer or the admin token: --token-file FILE or NETDIST_TOKEN"
    return "give the admin token: --token-file FILE or NETDIST_TOKEN"


def bearer(metadata: Any) -> str | None:
    """The token of ``authorization: Bearer TOKEN``; '' for another scheme; None without the header."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A refused call, for whoever records them (the audit log)."""

    method: str
    code: grpc.StatusCode
    message: str
    token_name: str = ""
    role: str = ""
    peer: str = ""


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    def __init__(self, tokens: TokenCache, *, on_refusal: Callable[[Refusal], None] | None = None) -> None:
        self._tokens = tokens
        self._on_refusal = on_refusal

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        method: str = details.method
        if method in OPEN_METHODS:
            return await continuation(details)
        handler = await continuation(details)
        roles = METHOD_ROLES.get(method, frozenset())
        token = bearer(details.invocation_metadata)
        short = method.rsplit(".", 1)[-1] if method.startswith("/") else method
        if not token:
            what = "this call carried no token" if token is None else "expected 'authorization: Bearer TOKEN'"
            return self._refuse(
                handler,
                Refusal(
                    method, grpc.StatusCode.UNAUTHENTICATED, f"{what}: {short} needs one; {advice(roles or _ADMIN)}"
                ),
            )
        known = self._tokens.lookup(token)
        if known is None:
            return self._refuse(
                handler,
                Refusal(
                    method,
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"the token given is not known to this server (revoked, or another server's): "
                    f"{advice(roles or _ADMIN)}",
                ),
            )
        if known.role not in roles:
            return self._refuse(
                handler,
                Refusal(
                    method,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the {known.role} token {known.name!r} may not call {short}; {advice(roles or _ADMIN)}"
                    if roles
                    else f"{short} is open to no role",
                    token_name=known.name,
                    role=known.role,
                ),
            )
        _CALL.set(_Call(known))
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        return _guarded(handler, self._tokens, known)

    def _refuse(self, handler: Any, refusal: Refusal) -> Any:
        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            seen = dataclasses.replace(refusal, peer=context.peer())
            log.info("refused %s from %s (%s): %s", seen.method, seen.peer, seen.code.name, seen.message)
            if self._on_refusal is not None:
                try:
                    self._on_refusal(seen)
                except Exception:
                    log.exception("recording a refused call failed")
            await context.abort(refusal.code, refusal.message)

        return _handler_like(handler, refuse)


def _handler_like(handler: Any, behavior: Callable[..., Any]) -> Any:
    """An RpcMethodHandler of ``handler``'s kind (unary-unary for an unknown method) running ``behavior``."""
    if handler is None:
        return grpc.unary_unary_rpc_method_handler(behavior)
    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kind[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def _guarded(handler: Any, tokens: TokenCache, token: KnownToken) -> Any:
    """``handler`` whose streaming behavior ends when ``token`` is revoked."""
    inner = handler.stream_stream or handler.unary_stream or handler.stream_unary
    if not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
        return handler  # a synchronous servicer: none of ours

    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if inspect.isasyncgenfunction(inner):  # the generator API, pumped through the reader/writer API
            async for item in inner(request, context):
                await context.write(item)
            return None
        return await inner(request, context)

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _until_revoked(run(request, context), tokens, token, context)

    return _handler_like(handler, guarded)


async def _until_revoked(
    work: Awaitable[Any], tokens: TokenCache, token: KnownToken, context: grpc.aio.ServicerContext
) -> Any:
    revoked = asyncio.Event()
    unwatch = tokens.watch(token.sha256, revoked.set)
    task = asyncio.ensure_future(work)  # copies the context: identify() works inside
    waiter = asyncio.ensure_future(revoked.wait())
    try:
        if not tokens.valid(token.sha256):
            revoked.set()
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        call = _CALL.get()
        for close in call.closers if call is not None else ():
            close()
        await asyncio.wait((task,), timeout=CLOSE_SECONDS if call is not None and call.closers else 0)
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
        if not task.cancelled() and isinstance(task.exception(), grpc.aio.AbortError):
            raise task.exception()  # type: ignore[misc]  # the stream had ended with its own status
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"the token {token.name!r} was revoked: this stream ended; {advice(frozenset({token.role}))}",
        )
    finally:
        unwatch()
        waiter.cancel()
        if not task.done():  # the caller went away (cancelled): so does the work
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
