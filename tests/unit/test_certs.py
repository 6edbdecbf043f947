"""The private CA of ``netdist-server tls``: names, expiry, chains, key file modes, refusals."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from netdist import pem
from netdist.errors import CertificateError
from netdist.server import certs
from netdist.server.cli import main

NOW = datetime.datetime(2030, 5, 1, 12, 0, tzinfo=datetime.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


@pytest.fixture
def files(tmp_path: Path) -> certs.TLSFiles:
    files = certs.TLSFiles.of(tmp_path / "data")
    certs.create_ca(files, common_name="netdist CA test", now=NOW)
    return files


def test_server_certificate_names_hosts_and_loopback_as_dns_and_ip_sans(files: certs.TLSFiles) -> None:
    issued = certs.issue_server(files, ["Lab.Example.org.", "10.0.0.5", "[fd00::7]", "localhost"], now=NOW)
    cert = load(issued.cert_path)
    dns, ips = sans(cert)
    assert dns == ["lab.example.org", "localhost"]
    assert ips == ["10.0.0.5", "fd00::7", "127.0.0.1", "::1"]
    assert issued.names == ("lab.example.org", "10.0.0.5", "fd00::7", "localhost", "127.0.0.1", "::1")
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "lab.example.org"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(load(files.ca_cert))  # raises when the CA did not sign it


def test_validity_follows_days_starts_a_little_early_and_never_outlives_the_ca(files: certs.TLSFiles) -> None:
    cert = load(certs.issue_server(files, ["lab"], days=30, now=NOW).cert_path)
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    assert cert.not_valid_before_utc == NOW - certs.CLOCK_SKEW
    ca = load(files.ca_cert)
    assert ca.not_valid_after_utc == NOW + datetime.timedelta(days=certs.CA_DAYS)
    late = NOW + datetime.timedelta(days=certs.CA_DAYS - 10)
    capped = load(certs.issue_client(files, "w1", days=365, now=late).cert_path)
    assert capped.not_valid_after_utc == ca.not_valid_after_utc


def test_keys_are_p256_and_mode_0600_certificates_0644_whatever_the_umask(tmp_path: Path) -> None:
    files = certs.TLSFiles.of(tmp_path / "data")
    old = os.umask(0o077)
    try:
        certs.create_ca(files, common_name="ca")
        certs.issue_server(files, ["lab"])
        certs.issue_client(files, "w1")
    finally:
        os.umask(old)
    for key in (files.ca_key, files.server_key, files.client_key("w1")):
        assert mode(key) == 0o600, key
    for cert in (files.ca_cert, files.server_cert, files.client_cert("w1")):
        assert mode(cert) == 0o644, cert
        public = load(cert).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert mode(files.directory) == 0o700
    assert not list(files.directory.rglob(".tmp-*"))


def test_key_files_are_never_readable_by_others_even_while_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600 by open(2): a file first made 0644 and chmod-ed later could be opened in between."""
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777) -> int:
        opened.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    certs.create_ca(certs.TLSFiles.of(tmp_path), common_name="ca")
    monkeypatch.undo()
    modes = {Path(p).name.split(".")[-2]: m for p, m in opened}  # ".tmp-ca.key.1a2b" -> "key"
    assert modes == {"key": 0o600, "crt": 0o644}


def test_client_certificate_is_for_client_auth_and_chains_to_the_ca(files: certs.TLSFiles) -> None:
    issued = certs.issue_client(files, "lab-1", now=NOW)
    cert = load(issued.cert_path)
    assert issued.cert_path == files.directory / "clients" / "lab-1.crt"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "lab-1"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(load(files.ca_cert))
    with pytest.raises(CertificateError, match="exists already"):
        certs.issue_client(files, "lab-1")
    again = certs.issue_client(files, "lab-1", force=True)
    assert load(again.cert_path).serial_number != cert.serial_number


def test_an_existing_ca_is_kept_unless_forced(files: certs.TLSFiles) -> None:
    before = files.ca_cert.read_bytes()
    with pytest.raises(CertificateError, match=r"a CA already exists .*tls server.*--force"):
        certs.create_ca(files, common_name="again")
    assert files.ca_cert.read_bytes() == before
    certs.create_ca(files, common_name="again", force=True)
    assert files.ca_cert.read_bytes() != before


@pytest.mark.parametrize("host", ["bad name", "-lab", "lab-", "a..b", "x" * 64, "lab/1", "ünï.example"])
def test_a_host_that_is_no_dns_name_or_ip_is_refused(host: str) -> None:
    with pytest.raises(CertificateError, match="--host"):
        certs.server_names([host])


def test_wildcards_and_ipv6_are_names_too() -> None:
    assert certs.server_names(["*.lab.example", "fd00::1", "[fd00::1]"]) == (
        "*.lab.example",
        "fd00::1",
        "localhost",
        "127.0.0.1",
        "::1",
    )


def test_issuing_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"no CA at .*ca.crt: run `netdist-server tls init`"):
        certs.issue_client(certs.TLSFiles.of(tmp_path), "w1")


def test_tls_init_cli_writes_everything_and_prints_the_serve_flags(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    done = runner.invoke(main, ["tls", "init", "--data-dir", str(data), "--host", "lab.example.org", "--days", "10"])
    assert done.exit_code == 0, done.output
    tls = data / "tls"
    assert f"--tls-cert {tls.resolve() / 'server.crt'} --tls-key {tls.resolve() / 'server.key'}" in done.output
    assert "--tls-ca ca.crt" in done.output and "lab.example.org:50051" in done.output
    assert "lab.example.org, localhost, 127.0.0.1, ::1" in done.output
    assert sorted(p.name for p in tls.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]

    again = runner.invoke(main, ["tls", "init", "--data-dir", str(data), "--host", "other"])
    assert again.exit_code == 2 and "CertificateError: a CA already exists" in again.output

    renewed = runner.invoke(main, ["tls", "server", "--data-dir", str(data), "--host", "other"])
    assert renewed.exit_code == 0, renewed.output
    assert sans(load(tls / "server.crt"))[0] == ["other", "localhost"]

    client = runner.invoke(main, ["tls", "client", "--data-dir", str(data), "--name", "w1"])
    assert client.exit_code == 0 and "--tls-cert w1.crt --tls-key w1.key" in client.output
    bad = runner.invoke(main, ["tls", "client", "--data-dir", str(data), "--name", "../w1"])
    assert bad.exit_code == 2 and "CertificateError: --name '../w1'" in bad.output


def test_a_certificate_for_the_other_side_is_refused_before_any_handshake(files: certs.TLSFiles) -> None:
    """Found by an operator: server.crt given as a client certificate failed in the handshake, which the
    client could only guess at ('issued by another CA, or expired'; neither was true)."""
    server = certs.issue_server(files, ["lab.example.org"])
    client = certs.issue_client(files, "lab-1")
    for issued, purpose in ((server, "server"), (client, "client")):
        pem.read_key_pair(issued.cert_path, issued.key_path, cert_option="--tls-cert", key_option="--tls-key")
        pem.read_key_pair(
            issued.cert_path, issued.key_path, cert_option="--tls-cert", key_option="--tls-key", purpose=purpose
        )
    with pytest.raises(CertificateError) as as_client:
        pem.read_key_pair(
            server.cert_path, server.key_path, cert_option="--tls-cert", key_option="--tls-key", purpose="client"
        )
    assert as_client.value.message == (
        f"--tls-cert {server.cert_path}: not a client certificate (its extended key usage allows serverAuth): "
        "TLS refuses it as one; use a client certificate (netdist-server tls client --name NAME makes one)"
    )
    with pytest.raises(CertificateError, match=r"not a server certificate .* allows clientAuth"):
        pem.read_key_pair(
            client.cert_path, client.key_path, cert_option="--tls-cert", key_option="--tls-key", purpose="server"
        )
