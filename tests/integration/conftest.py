from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from netdist.channel import ClientSecurity, sync_channel
from netdist.testing import (
    Admin,
    Process,
    ServerProcess,
    start_server,
    start_worker,
    wait_until,
)
from tests.inprocess import InProcessServer, start_in_process

HEARTBEAT = 0.3  # seconds; a silent worker is gone after three of them


@dataclasses.dataclass
class Cluster:
    """A real server, real workers and an admin client; owns their cleanup.

    The server is a ``netdist-server`` process, or with ``in_process`` the same app in the
    test process (tests marked ``in_process``): then ``cluster.app`` reaches its dispatcher,
    manager and runtimes."""

    root: Path
    db_url: str
    in_process: bool = False
    server: ServerProcess | InProcessServer | None = None
    admin: Admin | None = None
    workers: list[Process] = dataclasses.field(default_factory=list)
    generation: int = 0
    secrets: list[str] = dataclasses.field(default_factory=list)
    """Token values a test made itself; with the server's token files and the workers' credentials,
    none may appear in a log or a CLI output (checked at teardown)."""
    outputs: list[str] = dataclasses.field(default_factory=list)
    """What CLIs the test ran printed (a new token's one printing excepted)."""

    def start_server(
        self,
        port: int = 0,
        *,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        **options: Any,
    ) -> ServerProcess | InProcessServer:
        """(Re)start the server on the same store; ``extra_args``, ``env`` and ``cwd`` for a process,
        ``options`` (:class:`ServerConfig` fields) for one in the test process."""
        if self.server is not None and self.server.alive():
            self.server.stop()
        self.generation += 1
        name = f"server-{self.generation}"
        if self.in_process:
            assert not extra_args and env is None and cwd is None, "an in-process server takes ServerConfig fields"
            self.server = start_in_process(
                self.root / "data",
                log_dir=self.root / "logs",
                db_url=self.db_url,
                port=port,
                heartbeat_interval_seconds=HEARTBEAT,
                name=name,
                **options,
            )
        else:
            assert not options, "a server process takes extra_args"
            self.server = start_server(
                self.root / "data",
                log_dir=self.root / "logs",
                db_url=self.db_url,
                port=port,
                heartbeat_interval=HEARTBEAT,
                name=name,
                extra_args=extra_args,
                env=env,
                cwd=cwd,
            )
        if self.admin is not None:
            self.admin.close()
        self.admin = Admin(self.server.address)
        return self.server

    @property
    def app(self) -> InProcessServer:
        """The in-process server (tests marked ``in_process``)."""
        assert isinstance(self.server, InProcessServer), "mark the test in_process to reach the app"
        return self.server

    @property
    def process(self) -> ServerProcess:
        """The server process (tests that kill it)."""
        assert isinstance(self.server, ServerProcess), "a killed server needs a process: do not mark it in_process"
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.address.rsplit(":", 1)[1])

    def add_worker(
        self,
        name: str,
        *,
        slots: int = 1,
        labels: dict[str, str] | None = None,
        target: str | None = None,
        extra_args: tuple[str, ...] = (),
        token_file: Path | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """A worker of the server, or of ``target`` (a proxy in front of it); the server's worker token
        unless ``token_file`` says otherwise; started in ``cwd``."""
        assert self.server is not None
        worker = start_worker(
            target or self.server.address,
            name=name,
            log_dir=self.root / "logs",
            cache_dir=self.root / "cache" / name,
            slots=slots,
            labels=labels,
            extra_args=extra_args,
            token_file=token_file or self.server.worker_token_file,
            cwd=cwd,
        )
        self.workers.append(worker)
        return worker

    @property
    def api(self) -> Admin:
        assert self.admin is not None
        return self.admin

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted((self.root / "logs").glob("*.log"))
        )

    def admin_cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``netdist-admin`` as a subprocess run next to the server (NETDIST_DATA_DIR: it finds admin.token)."""
        assert self.server is not None
        done = subprocess.run(
            [sys.executable, "-m", "netdist.adminctl", "--server", self.server.address, "--timeout", "10", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "NETDIST_DATA_DIR": str(self.root / "data"), **(env or {})},
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def tokens_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``netdist-server tokens ARGS`` on this cluster's store."""
        return subprocess.run(
            [sys.executable, "-m", "netdist.server", "tokens", *args, "--db", self.db_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def make_token(self, role: str, name: str) -> str:
        """A new token made with ``netdist-server tokens create`` (the one output that shows it)."""
        done = self.tokens_cli("create", "--role", role, "--name", name)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        self.secrets.append(token)
        self.outputs.append(done.stderr)
        assert self.server is not None
        with sync_channel(self.server.address, ClientSecurity(token=token)) as channel:
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            ask = reflection_pb2.ServerReflectionRequest(list_services="")

            def known() -> bool:  # the server reloads its tokens every second; reflection takes any token
                try:
                    list(reflection.ServerReflectionInfo(iter([ask]), timeout=10))
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    return False
                return True

            wait_until(known, 10, what=f"the server to know the token {name!r}")
        return token

    def revoke_token(self, name: str) -> None:
        done = self.tokens_cli("revoke", name)
        self.outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr

    def all_secrets(self) -> dict[str, str]:
        """Every token and worker credential of this cluster: value -> what it is."""
        found = {value: "a token the test made" for value in self.secrets}
        for path in [*(self.root / "data").glob("*.token"), *(self.root / "cache").glob("*/*.credential")]:
            value = path.read_text().strip()
            if value:
                found[value] = str(path.relative_to(self.root))
        return found

    def leaks(self) -> list[str]:
        """Where a secret shows in a log under the test's dir or in a CLI's output (none, or a bug)."""
        secrets = self.all_secrets()
        texts = {str(p.relative_to(self.root)): p.read_text(errors="replace") for p in self.root.rglob("*.log")}
        texts.update({f"CLI output {i}": text for i, text in enumerate(self.outputs)})
        return [
            f"{what} in {where}" for where, text in texts.items() for value, what in secrets.items() if value in text
        ]

    def close(self) -> list[tuple[str, int]]:
        codes = [(w.name, w.stop()) for w in self.workers if w.popen.returncode is None]
        if self.admin is not None:
            self.admin.close()
        if self.server is not None and self.server.alive():
            codes.append((self.server.name, self.server.stop()))
        return codes


@pytest.fixture
def cluster(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(root=tmp_path, db_url=db_url, in_process=request.node.get_closest_marker("in_process") is not None)
    c.start_server()
    failed = False
    try:
        yield c
    except BaseException:
        failed = True
        raise
    finally:
        codes = c.close()
        report = getattr(request.node, "rep_call", None)
        if (report is not None and report.failed) or failed:
            print(c.logs())
        bad = [(name, code) for name, code in codes if code != 0]
        assert not bad, f"processes did not stop cleanly: {bad}\n{c.logs()}"
        assert not c.leaks(), f"secrets leaked: {c.leaks()}"


@pytest.fixture
def gates(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Gate files for jobs of the counter package's ``gate`` setting: such jobs
    wait until their gate exists. Every gate opens before the cluster stops."""
    made: list[Path] = []

    def make(name: str) -> Path:
        path = tmp_path / f"gate-{name}"
        made.append(path)
        return path

    yield make
    for path in made:
        path.touch()
