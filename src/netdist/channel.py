"""How a client reaches the server: TLS or plaintext, and its token on every call.

Every client (netdist-admin, netdist-worker, the test and demo helpers) opens
its channel here. The token travels as gRPC metadata ``authorization: Bearer
TOKEN``, so that any gRPC client can call the services the same way. On a
synchronous channel an interceptor adds it to every call; an asyncio client
passes :meth:`ClientSecurity.metadata` to each call it starts (the worker
starts two kinds: its stream and blob fetches).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

Options = Sequence[tuple[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientSecurity:
    """What a client presents: its token, and whether and how it speaks TLS."""

    token: str | None = dataclasses.field(default=None, repr=False)  # never in a log line
    tls: bool = False
    """Speak TLS; with no ``tls_ca``, the server's certificate must chain to the system's roots."""
    tls_ca: Path | None = None
    """PEM file of the roots to trust (``netdist-server tls init`` writes ``ca.crt``)."""
    tls_cert: Path | None = None
    """This client's certificate (PEM), for a server that requires one (mTLS)."""
    tls_key: Path | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca), private_key=read(self.tls_key),
            certificate_chain=read(self.tls_cert))


def sync_channel(target: str, security: ClientSecurity, options: Options = ()) -> grpc.Channel:
    """A blocking channel whose every call carries the token."""
    if security.tls or security.tls_ca is not None:
        channel = grpc.secure_channel(target, security.channel_credentials(), options=list(options))
    else:
        channel = grpc.insecure_channel(target, options=list(options))
    if not security.token:
        return channel
    return grpc.intercept_channel(channel, _TokenInterceptor(security.metadata))


def aio_channel(target: str, security: ClientSecurity, options: Options = ()) -> grpc.aio.Channel:
    """An asyncio channel; pass ``security.metadata`` to each call."""
    if security.tls or security.tls_ca is not None:
        return grpc.aio.secure_channel(target, security.channel_credentials(), options=list(options))
    return grpc.aio.insecure_channel(target, options=list(options))


_Details = collections.namedtuple(
    "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"))
_Interceptors: tuple[type, ...] = (grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor)


class _CallDetails(_Details, grpc.ClientCallDetails):  # type: ignore[misc]  # grpc ships no type stubs
    pass


class _TokenInterceptor(*_Interceptors):  # type: ignore[misc]
    """Adds the token to every call of a synchronous channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self._metadata]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                               requests: Iterator[Any]) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                                requests: Iterator[Any]) -> Any:
        return continuation(self._details(details), requests)
