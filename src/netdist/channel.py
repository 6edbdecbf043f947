"""How a client reaches the server: TLS or plaintext, and its token on every call.

A connection that fails for a TLS reason (an untrusted or expired server
certificate, a name the certificate is not for, a plaintext server, a server
that wants a client certificate) becomes one line saying so:
:func:`tls_failure` reads gRPC's words and the client's own settings.

Every client (netdist-admin, netdist-worker, the test and demo helpers) opens
its channel here. The token travels as gRPC metadata ``authorization: Bearer
TOKEN``, so that any gRPC client can call the services the same way. On a
synchronous channel an interceptor adds it to every call; an asyncio client
passes :meth:`ClientSecurity.metadata` to each call it starts (the worker
starts two kinds: its stream and blob fetches).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import ssl
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from netdist import pem
from netdist.errors import CertificateError

Options = Sequence[tuple[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientSecurity:
    """What a client presents: its token, and whether and how it speaks TLS."""

    token: str | None = dataclasses.field(default=None, repr=False)  # never in a log line
    tls: bool = False
    """Speak TLS; with no ``tls_ca``, the server's certificate must chain to the system's roots (:func:`system_roots`)."""
    tls_ca: Path | None = None
    """PEM file of the roots to trust (``netdist-server tls init`` writes ``ca.crt``)."""
    tls_cert: Path | None = None
    """This client's certificate (PEM), for a server that requires one (mTLS)."""
    tls_key: Path | None = None

    @property
    def uses_tls(self) -> bool:
        """TLS when asked for, or implied by a CA or a client certificate."""
        return self.tls or any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def check(self) -> None:
        """Read the files now, so that a wrong one is a usage error rather than a handshake that never works.

        Raises :class:`~netdist.errors.CertificateError` naming the option and the file.
        """
        if (self.tls_cert is None) != (self.tls_key is None):
            raise CertificateError("--tls-cert and --tls-key go together: give both")
        if self.tls_ca is not None:
            pem.read_certificates(self.tls_ca, option="--tls-ca")
        if self.tls_cert is not None and self.tls_key is not None:
            pem.read_key_pair(
                self.tls_cert, self.tls_key, cert_option="--tls-cert", key_option="--tls-key", purpose="client"
            )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        roots = read(self.tls_ca) if self.tls_ca is not None else system_roots()
        return grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=read(self.tls_key), certificate_chain=read(self.tls_cert)
        )


def system_roots() -> bytes | None:
    """The operating system's trusted roots: the PEM bundle OpenSSL uses (``SSL_CERT_FILE`` overrides it).

    gRPC would otherwise trust only the roots it ships, missing a CA an
    organisation installed on its machines. None when there is no bundle:
    then gRPC's own roots.
    """
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            with contextlib.suppress(OSError):
                return Path(candidate).read_bytes()
    return None


def sync_channel(target: str, security: ClientSecurity, options: Options = ()) -> grpc.Channel:
    """A blocking channel whose every call carries the token."""
    if security.uses_tls:
        channel = grpc.secure_channel(target, security.channel_credentials(), options=list(options))
    else:
        channel = grpc.insecure_channel(target, options=list(options))
    if not security.token:
        return channel
    return grpc.intercept_channel(channel, _TokenInterceptor(security.metadata))


def aio_channel(target: str, security: ClientSecurity, options: Options = ()) -> grpc.aio.Channel:
    """An asyncio channel; pass ``security.metadata`` to each call."""
    if security.uses_tls:
        return grpc.aio.secure_channel(target, security.channel_credentials(), options=list(options))
    return grpc.aio.insecure_channel(target, options=list(options))


_CONNECT_FAILED = "failed to connect to all addresses"
_SSL_REASON = re.compile(r"OPENSSL_internal:([A-Z0-9_]+)(?::\s*([^:]+))?")


def tls_failure(details: str | None, security: ClientSecurity) -> str | None:
    """Why a connection failed, when TLS is the likely cause; None otherwise.

    ``details`` are those of an UNAVAILABLE status. Every answer begins with
    ``TLS``. A server that refuses the client's certificate, or the lack of
    one, just closes the connection in the handshake; so does a TLS server
    for a plaintext client. Only a failure to connect is read that way, never
    a stream that broke later.
    """
    text = details or ""
    if _CONNECT_FAILED not in text:
        return None
    if "Hostname Verification Check failed" in text:
        return (
            "TLS: the server's certificate is not for the name or address connected to: use one it was "
            "issued for, or make one for this name too (netdist-server tls server --host NAME ...)"
        )
    found = _SSL_REASON.search(text)
    reason = found.group(1) if found else ""
    words = (found.group(2) or "").strip() if found else ""
    words = "" if words == "OK" else words  # gRPC ends its text with the status ": OK"
    if reason == "WRONG_VERSION_NUMBER":
        return (
            "TLS handshake failed: the server does not speak TLS (it serves plaintext): drop --tls and "
            "--tls-ca, or serve with --tls-cert and --tls-key"
        )
    if reason == "CERTIFICATE_VERIFY_FAILED":
        if "expired" in words:
            return "TLS: the server's certificate has expired: renew it (netdist-server tls server)"
        trusted = (
            f"it is not signed by the CA in {security.tls_ca}"
            if security.tls_ca is not None
            else "no --tls-ca was given, so the system's roots were used: give --tls-ca with the server's ca.crt"
        )
        return f"TLS: the server's certificate is not trusted ({words or reason}): {trusted}"
    if "Tls handshake failed" in text or "Handshake failed" in text:
        said = f"{reason}: {words}" if reason and words else reason or text.rpartition("last error: ")[2]
        return f"TLS handshake failed: {said}"
    if "Socket closed" not in text:
        return None
    if not security.uses_tls:
        return (
            "TLS: the server closed the connection at once: it probably requires TLS: give --tls-ca with "
            "its ca.crt (or --tls for a certificate from a public CA)"
        )
    if security.tls_cert is None:
        return (
            "TLS: the server closed the connection in the handshake: it probably requires a client "
            "certificate (mutual TLS): give --tls-cert and --tls-key (netdist-server tls client makes them)"
        )
    return (
        f"TLS: the server closed the connection in the handshake: it probably does not accept the client "
        f"certificate {security.tls_cert} (issued by another CA, or not for a client)"
    )


_Details = collections.namedtuple(
    "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)
_Interceptors: tuple[type, ...] = (
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
)


class _CallDetails(_Details, grpc.ClientCallDetails):  # type: ignore[misc]  # grpc ships no type stubs
    pass


class _TokenInterceptor(*_Interceptors):  # type: ignore[misc]
    """Adds the token to every call of a synchronous channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self._metadata]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), requests)
