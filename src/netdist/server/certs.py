"""A private certificate authority for one netdist server (``netdist-server tls``).

Everything lives under ``DATA_DIR/tls/``::

    ca.key, ca.crt              the CA; ca.crt is what every client is given (--tls-ca)
    server.key, server.crt      the server's certificate, for the names clients reach it by
    clients/NAME.key, NAME.crt  client certificates, for mutual TLS

Keys are EC P-256 (ECDSA with SHA-256): what every TLS stack speaks, gRPC's
BoringSSL included (Ed25519 certificates are not accepted by every client).
Private keys are unencrypted PEM (the server must start unattended), written
0600 from the moment the file exists, and every file is written to a
temporary name then renamed, so a crash never leaves half a key behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netdist.atomic_file import write_atomically
from netdist.errors import CertificateError

CA_DAYS = 3650
"""The CA lives ten years: renewing it means giving every client a new ca.crt."""
DEFAULT_DAYS = 365
"""Server and client certificates; ``tls server`` renews the server's from the same CA."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""Always in the server certificate: clients on the server's own machine can then use TLS too."""
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates are valid from a little before now, for clients whose clock is behind."""
KEY_MODE = 0o600
CERT_MODE = 0o644

_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^(\*\.)?({_DNS_LABEL}\.)*{_DNS_LABEL}$")
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TLSFiles:
    """Where ``tls init`` and ``tls client`` put their files."""

    directory: Path

    @classmethod
    def of(cls, data_dir: Path) -> TLSFiles:
        return cls(directory=data_dir / "tls")

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    def client_key(self, name: str) -> Path:
        return self.directory / "clients" / f"{name}.key"

    def client_cert(self, name: str) -> Path:
        return self.directory / "clients" / f"{name}.crt"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Issued:
    """A certificate written to disk, and what it is for."""

    cert_path: Path
    key_path: Path
    subject: str
    names: tuple[str, ...]
    """The subject alternative names, as given (empty for a client)."""
    not_after: datetime.datetime


def server_names(hosts: Sequence[str]) -> tuple[str, ...]:
    """The names and addresses a server certificate is for: ``hosts`` (checked), then the loopback ones.

    ``[::1]`` is taken as ``::1``; DNS names are lower-cased; duplicates are dropped.
    """
    names: list[str] = []
    for host in [*hosts, *LOOPBACK_NAMES]:
        name = _check_host(host)
        if name not in names:
            names.append(name)
    return tuple(names)


def _check_host(host: str) -> str:
    value = host.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value.lower().rstrip(".")
    if not name.isascii():
        raise CertificateError(f"--host {host!r}: give an internationalised name in its ASCII form (xn--...)")
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise CertificateError(f"--host {host!r} is neither an IP address nor a DNS name")
    return name


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def check_client_name(name: str) -> str:
    if not _CLIENT_NAME.match(name):
        raise CertificateError(f"--name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-' (it names the files)")
    return name


# -- the CA and what it issues ------------------------------------------------------------------


def create_ca(
    files: TLSFiles, *, common_name: str, force: bool = False, now: datetime.datetime | None = None
) -> Issued:
    """A new CA key and self-signed certificate; refuses to replace one unless ``force``."""
    existing = [p for p in (files.ca_key, files.ca_cert) if p.exists()]
    if existing and not force:
        raise CertificateError(
            f"a CA already exists at {existing[0]}: clients trust it. To renew the server's certificate "
            "from it run `netdist-server tls server`; --force replaces the CA (every client then needs "
            "the new ca.crt, and every client certificate must be issued again)"
        )
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netdist")]
    )
    not_after = now + datetime.timedelta(days=CA_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(files.ca_cert, files.ca_key, cert, key)
    return Issued(cert_path=files.ca_cert, key_path=files.ca_key, subject=common_name, names=(), not_after=not_after)


def issue_server(
    files: TLSFiles, hosts: Sequence[str], *, days: int = DEFAULT_DAYS, now: datetime.datetime | None = None
) -> Issued:
    """A server certificate for ``hosts`` and the loopback names, signed by the CA (replaces the old one)."""
    names = server_names(hosts)
    return _issue(
        files,
        subject=names[0],
        names=names,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
        cert_path=files.server_cert,
        key_path=files.server_key,
        now=now,
    )


def issue_client(
    files: TLSFiles, name: str, *, days: int = DEFAULT_DAYS, force: bool = False, now: datetime.datetime | None = None
) -> Issued:
    """A client certificate named ``name`` (its common name), for mutual TLS."""
    check_client_name(name)
    cert_path, key_path = files.client_cert(name), files.client_key(name)
    if cert_path.exists() and not force:
        raise CertificateError(
            f"a client certificate named {name!r} exists already ({cert_path}); --force issues a new one in its place"
        )
    return _issue(
        files,
        subject=name,
        names=(),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
        cert_path=cert_path,
        key_path=key_path,
        now=now,
    )


def _issue(
    files: TLSFiles,
    *,
    subject: str,
    names: Sequence[str],
    usage: x509.ObjectIdentifier,
    days: int,
    cert_path: Path,
    key_path: Path,
    now: datetime.datetime | None,
) -> Issued:
    if days < 1:
        raise CertificateError(f"--days {days}: a certificate must be valid for at least one day")
    ca_cert, ca_key = load_ca(files)
    now = now or _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, subject),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netdist"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_pair(cert_path, key_path, cert, key)
    return Issued(cert_path=cert_path, key_path=key_path, subject=subject, names=tuple(names), not_after=not_after)


def load_ca(files: TLSFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA made by ``tls init``; a clear error when it is missing or not one."""
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertificateError(
            f"no CA at {exc.filename}: run `netdist-server tls init` with this --data-dir first"
        ) from None
    except OSError as exc:
        raise CertificateError(f"cannot read the CA at {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise CertificateError(f"the CA in {files.directory} is not PEM: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateError(f"{files.ca_key} is not the key of {files.ca_cert}")
    return cert, key


# -- files ---------------------------------------------------------------------------------------


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_file(key_path, key_pem, KEY_MODE)
    write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``, atomically, its directory made for this user alone."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, data, mode)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
