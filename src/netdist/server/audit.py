"""Who did what: every state-changing call is recorded with its caller, target and outcome.

The servicers mark their state-changing methods with :func:`audited` (or call
:meth:`AuditLog.record` themselves where the target is known only at the
end, as for an upload), and the token check records every call it refuses
(:meth:`AuditLog.record_refusal`), reads included. Who the caller is comes
from the token check (token name and role); the peer is the caller's address
as gRPC saw it. Entries are buffered and written by the
server's own writer (so they survive a store outage) about five times a
second; the buffer is bounded, so that a flood of refused calls can cost no
more than memory for 10,000 entries (the excess is counted and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from netdist.errors import NetDistError, UnauthenticatedError
from netdist.server import auth
from netdist.server.store import audit as audit_store
from netdist.server.store.writer import GroupCommitWriter

log = logging.getLogger("netdist.server.audit")
FLUSH_SECONDS = 0.2
MAX_BUFFERED = 10_000
PRUNE_EVERY = 1000  # entries written between two prunes
R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who made a call, as far as the audit log knows: the token's name and role."""

    name: str
    role: str


def identify(context: grpc.aio.ServicerContext) -> Actor:
    """The caller of a call the token check let through (auth.identify); empty names for one it did not see."""
    try:
        who = auth.identify(context)
    except UnauthenticatedError:
        return Actor(name="", role="")
    return Actor(name=who.name, role=who.role)


class Identify(Protocol):
    def __call__(self, context: grpc.aio.ServicerContext) -> Actor: ...


class AuditLog:
    def __init__(self, writer: GroupCommitWriter, *, identify: Identify = identify) -> None:
        self._writer = writer
        self.identify = identify
        self._buffer: list[dict[str, Any]] = []
        self._dropped = 0
        self._written = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="netdist-audit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._flush()

    def record(
        self, context: grpc.aio.ServicerContext, *, method: str, target: str, outcome: str = "ok", detail: str = ""
    ) -> None:
        actor = self.identify(context)
        self._append(actor, peer=context.peer() or "", method=method, target=target, outcome=outcome, detail=detail)

    def record_refusal(self, refusal: auth.Refusal) -> None:
        """A call the token check refused (no token, an unknown one, or a role that may not make it)."""
        method = "/".join(part.rsplit(".", 1)[-1] for part in refusal.method.strip("/").split("/")[-2:])
        self._append(
            Actor(name=refusal.token_name, role=refusal.role),
            peer=refusal.peer,
            method=method,
            target="",
            outcome=refusal.code.name,
            detail=refusal.message,
        )

    def _append(self, actor: Actor, *, peer: str, method: str, target: str, outcome: str, detail: str) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self._dropped += 1
            return
        self._buffer.append(
            {
                "at": time.time(),
                "token_name": actor.name[:100],
                "role": actor.role[:10],
                "peer": peer[:200],
                "method": method[:100],
                "target": target[:400],
                "outcome": outcome[:40],
                "detail": detail[:2000],
            }
        )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self._flush()
            except Exception:
                log.exception("could not write the audit log; will try again")

    async def _flush(self) -> None:
        if self._dropped:
            log.warning(
                "audit log: %d entries dropped (more than %d waiting to be written)", self._dropped, MAX_BUFFERED
            )
            self._dropped = 0
        entries, self._buffer = self._buffer, []
        if not entries:
            return
        try:
            await self._writer.run(audit_store.add, entries)
        except Exception:
            self._buffer[:0] = entries[: MAX_BUFFERED - len(self._buffer)]  # kept for the next try
            raise
        self._written += len(entries)
        if self._written >= PRUNE_EVERY:
            self._written = 0
            await self._writer.run(audit_store.prune)


class Audited(Protocol):
    audit: AuditLog


def audited(
    service: str,
    *,
    target: Callable[[Any], str],
    detail: Callable[[Any], str] = lambda _: "",
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Record every call of a unary method, with its outcome; put it inside ``@to_status``."""

    def decorate(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        name = f"{service}/{method.__name__}"

        @functools.wraps(method)
        async def wrapper(self: Audited, request: Any, context: grpc.aio.ServicerContext) -> R:
            outcome, message = "ok", ""
            try:
                return await method(self, request, context)
            except NetDistError as exc:
                outcome, message = exc.code.name, exc.message
                raise
            except grpc.aio.AbortError:
                code = context.code()
                outcome = code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
                raise
            except Exception:
                outcome = "INTERNAL"
                raise
            finally:
                said = detail(request)
                if message:
                    said = f"{said}: {message}" if said else message
                self.audit.record(context, method=name, target=target(request), outcome=outcome, detail=said)

        return wrapper

    return decorate
