"""What is loopback, which PEM files are refused before gRPC sees them, and how a TLS failure is worded."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from netdist import pem
from netdist.channel import ClientSecurity, tls_failure
from netdist.errors import CertificateError
from netdist.server import certs
from netdist.server.transport import is_loopback, load_server_tls


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost.", "::ffff:127.0.0.1"]
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "[::]",
        "",
        "10.0.0.5",
        "fe80::1",
        "lab.example.org",
        "localhost.example.org",
        "127.0.0.1.nip.io",
        "::ffff:10.0.0.1",
    ],
)
def test_everything_else_reaches_other_machines(host: str) -> None:
    assert not is_loopback(host)


@pytest.fixture
def files(tmp_path: Path) -> certs.TLSFiles:
    files = certs.TLSFiles.of(tmp_path / "data")
    certs.create_ca(files, common_name="ca")
    certs.issue_server(files, ["lab"])
    certs.issue_client(files, "w1")
    return files


def test_a_matching_pair_loads_and_says_who_it_is_for(files: certs.TLSFiles) -> None:
    server = load_server_tls(files.server_cert, files.server_key, files.ca_cert)
    assert server.mutual and server.client_ca == files.ca_cert.read_bytes()
    assert server.certificate.startswith("O=netdist,CN=lab (DNS:lab, DNS:localhost, IP:127.0.0.1, IP:::1)")
    assert "private_key" not in repr(server)


def test_a_key_of_another_certificate_is_refused(files: certs.TLSFiles) -> None:
    with pytest.raises(CertificateError, match=r"--tls-key .*ca.key is not the key of the certificate in"):
        load_server_tls(files.server_cert, files.ca_key)


def test_files_that_are_not_pem_are_refused_naming_the_option(files: certs.TLSFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    with pytest.raises(CertificateError, match=r"^--tls-cert .*server.key: no PEM certificate in it$"):
        load_server_tls(files.server_key, files.server_key)
    with pytest.raises(CertificateError, match=r"^--tls-key .*junk.pem: not a PEM private key$"):
        load_server_tls(files.server_cert, junk)
    with pytest.raises(CertificateError, match=r"^--tls-client-ca .*junk.pem: no PEM certificate in it$"):
        load_server_tls(files.server_cert, files.server_key, junk)
    with pytest.raises(CertificateError, match=r"^--tls-ca .*missing.crt: cannot read it"):
        pem.read_certificates(tmp_path / "missing.crt", option="--tls-ca")


def test_a_passphrase_protected_key_is_refused(files: certs.TLSFiles, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertificateError, match="protected by a passphrase"):
        load_server_tls(files.server_cert, locked)


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    files = certs.TLSFiles.of(tmp_path)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    certs.create_ca(files, common_name="ca", now=past)
    certs.issue_server(files, ["lab"], days=2, now=past)
    with pytest.raises(CertificateError, match=r"--tls-cert .*server.crt: the certificate expired on "):
        load_server_tls(files.server_cert, files.server_key)


def test_client_security_checks_its_files(files: certs.TLSFiles) -> None:
    ClientSecurity(tls_ca=files.ca_cert, tls_cert=files.client_cert("w1"), tls_key=files.client_key("w1")).check()
    with pytest.raises(CertificateError, match="--tls-cert and --tls-key go together"):
        ClientSecurity(tls_cert=files.client_cert("w1")).check()
    with pytest.raises(CertificateError, match=r"--tls-ca .*ca.key: no PEM certificate"):
        ClientSecurity(tls_ca=files.ca_key).check()
    assert ClientSecurity(tls_ca=files.ca_cert).uses_tls and not ClientSecurity().uses_tls


# gRPC 1.85's own words for each failure (as seen against real servers in tests/e2e/test_tls.py).
CONNECT = "failed to connect to all addresses; last error: "
UNTRUSTED = (
    CONNECT + "UNKNOWN: ipv4:127.0.0.1:44035: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
    "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
    "certificate: OK"
)
EXPIRED = UNTRUSTED.replace("unable to get local issuer certificate", "certificate has expired")
PLAINTEXT_SERVER = (
    CONNECT + "UNKNOWN: ipv4:127.0.0.1:41261: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
    "SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid "
    "certificate verification context: OK"
)
CLOSED = CONNECT + "UNAVAILABLE: ipv4:127.0.0.1:44781: Socket closed"
WRONG_NAME = (
    CONNECT + "UNKNOWN: ipv4:127.0.0.2:38585: Custom verification check failed with error: "
    "UNAUTHENTICATED: Hostname Verification Check failed."
)
REFUSED = CONNECT + "UNAVAILABLE: ipv4:127.0.0.1:1: Connection refused"


def test_tls_failures_in_words() -> None:
    ca = ClientSecurity(tls_ca=Path("ca.crt"))
    assert tls_failure(UNTRUSTED, ca) == (
        "TLS: the server's certificate is not trusted (unable to get local issuer certificate): it is not signed "
        "by the CA in ca.crt"
    )
    assert "no --tls-ca was given, so the system's roots were used" in (
        tls_failure(UNTRUSTED, ClientSecurity(tls=True)) or ""
    )
    assert tls_failure(EXPIRED, ca) == "TLS: the server's certificate has expired: renew it (netdist-server tls server)"
    assert (tls_failure(PLAINTEXT_SERVER, ca) or "").startswith("TLS handshake failed: the server does not speak TLS")
    assert (tls_failure(WRONG_NAME, ca) or "").startswith("TLS: the server's certificate is not for the name")
    assert "it probably requires TLS: give --tls-ca" in (tls_failure(CLOSED, ClientSecurity()) or "")
    assert "probably requires a client certificate" in (tls_failure(CLOSED, ca) or "")
    mtls = ClientSecurity(tls_ca=Path("ca.crt"), tls_cert=Path("w1.crt"), tls_key=Path("w1.key"))
    assert "does not accept the client certificate w1.crt" in (tls_failure(CLOSED, mtls) or "")


def test_another_handshake_failure_keeps_grpcs_reason() -> None:
    other = PLAINTEXT_SERVER.replace(
        "WRONG_VERSION_NUMBER: Invalid certificate verification context", "NO_SHARED_CIPHER"
    )
    assert tls_failure(other, ClientSecurity(tls=True)) == "TLS handshake failed: NO_SHARED_CIPHER"


def test_other_failures_are_left_alone() -> None:
    assert tls_failure(REFUSED, ClientSecurity(tls=True)) is None
    assert tls_failure("Socket closed", ClientSecurity()) is None  # a stream that broke, not a connect
    assert tls_failure(None, ClientSecurity()) is None
