"""How the server listens: TLS, mutual TLS, or plaintext on loopback only.

Plaintext is allowed on a loopback address (127.0.0.0/8, ::1, ``localhost``)
because nothing off the machine can reach it. Any other address, including
the wildcards ``0.0.0.0`` and ``::`` (every interface), needs a certificate,
or ``--insecure`` said on purpose. Host names other than ``localhost`` are
not resolved: a name is a name someone else can reach.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

import grpc

from netdist import pem

EXPIRY_WARNING = datetime.timedelta(days=30)
"""The server warns on start when its certificate ends sooner than this."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerTLS:
    """The server's certificate and key, and the CA its clients' certificates must chain to (mTLS)."""

    cert_chain: bytes
    private_key: bytes = dataclasses.field(repr=False)
    client_ca: bytes | None = None
    """PEM roots; when set, a client without a certificate from them is refused in the handshake."""
    certificate: str = ""
    """Who the certificate is for and until when, for the log."""
    not_after: datetime.datetime | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def expires_soon(self, now: datetime.datetime) -> bool:
        return self.not_after is not None and self.not_after - now < EXPIRY_WARNING


def load_server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ServerTLS:
    """Read and check the files of ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca``.

    Raises :class:`~netdist.errors.CertificateError` naming the option and the file.
    """
    pair = pem.read_key_pair(cert, key, cert_option="--tls-cert", key_option="--tls-key", purpose="server")
    roots = pem.read_certificates(client_ca, option="--tls-client-ca") if client_ca is not None else None
    return ServerTLS(
        cert_chain=pair.cert_chain,
        private_key=pair.private_key,
        client_ca=roots,
        certificate=pem.describe(pair.leaf),
        not_after=pair.leaf.not_valid_after_utc,
    )


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 (also v4-mapped), ``localhost``.

    The wildcards ``0.0.0.0`` and ``::`` are every interface, so not loopback.
    """
    value = host.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if value.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
