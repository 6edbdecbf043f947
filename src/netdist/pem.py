"""Read the PEM files given with ``--tls-*`` and check them before gRPC sees them.

gRPC takes certificate and key bytes as they are and fails late and vaguely on
bad ones (a handshake that never succeeds); these checks fail at once, with
the option and the file named: not PEM, a key that is not the certificate's,
a key protected by a passphrase, a certificate past its end.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from netdist.errors import CertificateError


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """A certificate (chain, leaf first) and its private key, both PEM."""

    cert_chain: bytes
    private_key: bytes
    leaf: x509.Certificate


def read_certificates(path: Path, *, option: str) -> bytes:
    """The PEM bytes of a file of one or more certificates (trusted roots, a chain)."""
    data = _read(path, option)
    _certificates(data, path, option)
    return data


_PURPOSES = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH}


def read_key_pair(
    cert_path: Path, key_path: Path, *, cert_option: str, key_option: str, purpose: str | None = None
) -> KeyPair:
    """A certificate and its key, checked to belong together and to be valid now; with ``purpose`` ("client"
    or "server"), checked to be for it when it says what it is for (its extended key usage)."""
    cert_data, key_data = _read(cert_path, cert_option), _read(key_path, key_option)
    leaf = _certificates(cert_data, cert_path, cert_option)[0]
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise CertificateError(
            f"{key_option} {key_path}: the key is protected by a passphrase; netdist needs it unencrypted "
            "(keep the file mode 0600)"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise CertificateError(f"{key_option} {key_path}: a key of a kind TLS cannot use ({exc})") from None
    except ValueError:
        raise CertificateError(f"{key_option} {key_path}: not a PEM private key") from None
    if key.public_key() != leaf.public_key():
        raise CertificateError(f"{key_option} {key_path} is not the key of the certificate in {cert_path}")
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        raise CertificateError(
            f"{cert_option} {cert_path}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if purpose is not None:
        _check_purpose(leaf, purpose, f"{cert_option} {cert_path}")
    return KeyPair(cert_chain=cert_data, private_key=key_data, leaf=leaf)


def _check_purpose(cert: x509.Certificate, purpose: str, named: str) -> None:
    """CertificateError when ``cert`` names what it is for and ``purpose`` is not among it: TLS would refuse
    it in the handshake, and the peer could not say why."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # for any purpose
    if _PURPOSES[purpose] in usage or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usage:
        return
    said = ", ".join(sorted(getattr(oid, "_name", oid.dotted_string) for oid in usage)) or "nothing"
    make = "netdist-server tls client --name NAME" if purpose == "client" else "netdist-server tls server"
    raise CertificateError(
        f"{named}: not a {purpose} certificate (its extended key usage allows {said}): TLS refuses it as one; "
        f"use a {purpose} certificate ({make} makes one)"
    )


def describe(cert: x509.Certificate) -> str:
    """Who a certificate is for and until when: ``CN=lab-1 (DNS:lab, IP:10.0.0.5), valid until 2027-01-31``."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
    subject = cert.subject.rfc4514_string() or "no subject"
    listed = f" ({', '.join(names)})" if names else ""
    return f"{subject}{listed}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None


def _certificates(data: bytes, path: Path, option: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{option} {path}: no PEM certificate in it") from None
    return certs
