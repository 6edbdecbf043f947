"""TLS and mutual TLS with real processes and certificates made by ``netdist-server tls``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netdist.channel import ClientSecurity
from netdist.server.certs import TLSFiles
from netdist.testing import (
    Admin,
    Process,
    ServerProcess,
    start_server,
    start_worker,
    tls_args,
    wait_until,
)
from tests.support import counter_script, counter_wheel, expected_sum


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def admin(
    address: str, security: ClientSecurity | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run("netdist.adminctl", "--server", address, "--timeout", "10", *tls_args(security), *args, env=env)


def ok(address: str, security: ClientSecurity | None, *args: str, env: dict[str, str] | None = None) -> str:
    done = admin(address, security, *args, env=env)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def refused_in_one_line(done: subprocess.CompletedProcess[str]) -> str:
    """Exit 3 and one red line about TLS; returns the line."""
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("UnavailableError: cannot reach the netdist server at "), lines
    assert "TLS" in lines[0] and "Traceback" not in done.stderr and done.stdout == ""
    return lines[0]


@dataclasses.dataclass
class PKI:
    """A CA made by ``tls init`` with client certificates, and another CA nobody trusts."""

    files: TLSFiles
    other: TLSFiles

    @property
    def ca(self) -> ClientSecurity:
        return ClientSecurity(tls_ca=self.files.ca_cert)

    def client(self, name: str, *, files: TLSFiles | None = None) -> ClientSecurity:
        files = files or self.files
        if not files.client_cert(name).exists():
            made = run("netdist.server", "tls", "client", "--data-dir", str(files.directory.parent), "--name", name)
            assert made.returncode == 0, made.stderr
        return ClientSecurity(
            tls_ca=self.files.ca_cert, tls_cert=files.client_cert(name), tls_key=files.client_key(name)
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    for name in ("ours", "theirs"):
        made = run("netdist.server", "tls", "init", "--data-dir", str(root / name), "--host", "lab.example.org")
        assert made.returncode == 0, made.stderr
        # The serve line it prints serves this data dir (it left --data-dir out: another store, run as printed).
        assert f"netdist-server serve --host 0.0.0.0 --data-dir {(root / name).resolve()} --tls-cert" in made.stdout
    return PKI(files=TLSFiles.of(root / "ours"), other=TLSFiles.of(root / "theirs"))


@dataclasses.dataclass
class Rig:
    root: Path
    processes: list[Process] = dataclasses.field(default_factory=list)

    def server(self, *, port: int = 0, **tls: Any) -> ServerProcess:
        server = start_server(
            self.root / "data", log_dir=self.root / "logs", port=port, name=f"server-{len(self.processes)}", **tls
        )
        self.processes.append(server)
        return server

    def worker(self, server: ServerProcess, name: str, security: ClientSecurity | None) -> Process:
        worker = start_worker(
            server.address,
            name=name,
            log_dir=self.root / "logs",
            cache_dir=self.root / "cache" / name,
            security=security,
        )
        self.processes.append(worker)
        return worker


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    rig = Rig(root=tmp_path)
    monkeypatch.setenv("NETDIST_DATA_DIR", str(tmp_path / "data"))  # netdist-admin finds the server's admin.token
    yield rig
    codes = {p.name: p.stop() for p in reversed(rig.processes)}
    logs = "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in rig.processes)
    assert all(code == 0 for code in codes.values()), f"{codes}\n{logs}"


def tls_lines(worker: Process, server: ServerProcess) -> list[str]:
    return [line for line in worker.output().splitlines() if f"cannot connect to {server.address}: TLS" in line]


def fails_clearly(worker: Process, server: ServerProcess, words: str) -> None:
    """The worker says why on every attempt (two at least), and keeps trying."""
    wait_until(lambda: len(tls_lines(worker, server)) >= 2, 20, what=f"two TLS failures in {worker.name}'s log")
    assert all(words in line for line in tls_lines(worker, server)), tls_lines(worker, server)
    assert worker.alive() and "Traceback" not in worker.output()


def run_counter(address: str, security: ClientSecurity, tmp_path: Path, *, count: int = 5) -> None:
    """Upload, add, start and finish a job script through netdist-admin over ``security``."""
    assert "uploaded counter 1.0" in ok(address, security, "upload-package", str(counter_wheel(tmp_path)))
    script = counter_script(tmp_path / "job.py", job="tls job", count=count)
    assert "created: handler" in ok(address, security, "jobs", "add", str(script))
    assert "state running" in ok(address, security, "handlers", "start", "tls job")
    api = Admin(address, security=security)
    try:
        info = api.wait_state("tls job", "finished", timeout=60)
    finally:
        api.close()
    assert info.result_summary == f"1.0 sum={expected_sum(count)} seen={count} failures=0"
    (shown,) = json.loads(ok(address, security, "handlers", "list", "--json"))
    assert (shown["job_name"], shown["state"]) == ("tls job", "finished")


def test_a_job_runs_to_the_end_over_tls_and_plaintext_clients_are_told_why_not(
    rig: Rig, pki: PKI, tmp_path: Path
) -> None:
    server = rig.server(tls_cert=pki.files.server_cert, tls_key=pki.files.server_key)
    assert re.search(r"listening on 127\.0\.0\.1:\d+ \(TLS\)", server.output())
    assert "TLS certificate O=netdist,CN=lab.example.org" in server.output()
    rig.worker(server, "w1", pki.ca)
    run_counter(server.address, pki.ca, tmp_path)

    line = refused_in_one_line(admin(server.address, None, "status"))
    assert line.endswith(
        "the server closed the connection at once: it probably requires TLS: give --tls-ca with "
        "its ca.crt (or --tls for a certificate from a public CA)"
    )
    plain = rig.worker(server, "plain", None)
    fails_clearly(plain, server, "it probably requires TLS")
    untrusting = rig.worker(server, "system-roots", ClientSecurity(tls=True))
    fails_clearly(untrusting, server, "no --tls-ca was given, so the system's roots were used")
    # --tls alone trusts the machine's store (OpenSSL's bundle), not only the roots gRPC ships:
    trusting = {"SSL_CERT_FILE": str(pki.files.ca_cert)}
    assert "netdist 0.1.0 at 127.0.0.1" in ok(server.address, ClientSecurity(tls=True), "status", env=trusting)
    (connected,) = [w for w in json.loads(ok(server.address, pki.ca, "workers", "list", "--json")) if w["connected"]]
    assert connected["name"] == "w1"


def test_mutual_tls_takes_certificates_from_its_ca_only(rig: Rig, pki: PKI, tmp_path: Path) -> None:
    server = rig.server(tls_cert=pki.files.server_cert, tls_key=pki.files.server_key, tls_client_ca=pki.files.ca_cert)
    assert "(TLS, client certificates required)" in server.output()
    rig.worker(server, "w1", pki.client("w1"))
    run_counter(server.address, pki.client("ops"), tmp_path, count=3)

    no_cert = refused_in_one_line(admin(server.address, pki.ca, "status"))
    assert "it probably requires a client certificate (mutual TLS): give --tls-cert and --tls-key" in no_cert
    stranger = pki.client("ops", files=pki.other)
    foreign = refused_in_one_line(admin(server.address, stranger, "status"))
    assert f"it probably does not accept the client certificate {stranger.tls_cert}" in foreign

    fails_clearly(rig.worker(server, "no-cert", pki.ca), server, "requires a client certificate")
    fails_clearly(
        rig.worker(server, "foreign", pki.client("w2", files=pki.other)),
        server,
        "does not accept the client certificate",
    )
    names = {w["name"] for w in json.loads(ok(server.address, pki.client("ops"), "workers", "list", "--json"))}
    assert names == {"w1"}


def test_a_tls_client_of_a_plaintext_server_fails_clearly_and_connects_once_it_serves_tls(
    rig: Rig, pki: PKI, tmp_path: Path
) -> None:
    plain = rig.server()
    assert "(plaintext)" in plain.output()
    line = refused_in_one_line(admin(plain.address, pki.ca, "status"))
    assert "TLS handshake failed: the server does not speak TLS (it serves plaintext)" in line
    worker = rig.worker(plain, "w1", pki.ca)
    fails_clearly(worker, plain, "the server does not speak TLS")

    assert plain.stop() == 0
    port = int(plain.address.rpartition(":")[2])
    secured = rig.server(port=port, tls_cert=pki.files.server_cert, tls_key=pki.files.server_key)

    def connected() -> bool:
        workers = json.loads(ok(secured.address, pki.ca, "workers", "list", "--json"))
        return any(w["name"] == "w1" and w["connected"] for w in workers)

    wait_until(connected, 30, what="the worker to connect once the server speaks TLS")


def test_plaintext_beyond_loopback_needs_insecure_and_is_warned_about_on_every_start(
    rig: Rig, pki: PKI, tmp_path: Path
) -> None:
    for host in ("0.0.0.0", "::"):
        done = run("netdist.server", "serve", "--host", host, "--port", "0", "--data-dir", str(tmp_path / "data"))
        assert done.returncode == 2, done
        assert done.stderr.strip().splitlines() == [
            f"UsageError: --host {host} is reachable from other machines and would serve plaintext: give "
            "--tls-cert and --tls-key (`netdist-server tls init` makes them), or --insecure"
        ]
    assert not (tmp_path / "data").exists()  # refused before anything was made

    for start in (1, 2):
        server = start_server(
            tmp_path / "data",
            log_dir=tmp_path / "logs",
            name=f"insecure-{start}",
            extra_args=["--host", "0.0.0.0", "--insecure"],
        )
        rig.processes.append(server)
        assert "WARNING netdist.server: serving PLAINTEXT on 0.0.0.0 (--insecure)" in server.output()
        assert server.stop() == 0

    tls = run(
        "netdist.server",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--tls-cert",
        str(pki.files.server_cert),
        "--tls-key",
        str(pki.files.ca_key),
    )
    assert tls.returncode == 2
    assert tls.stderr.strip().endswith(f"ca.key is not the key of the certificate in {pki.files.server_cert}")
