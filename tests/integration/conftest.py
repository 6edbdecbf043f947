from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netdist.testing import Admin, Process, ServerProcess, start_server, start_worker

HEARTBEAT = 0.3  # seconds; a silent worker is gone after three of them


@dataclasses.dataclass
class Cluster:
    """A real server, real workers and an admin client; owns their cleanup."""

    root: Path
    db_url: str
    server: ServerProcess | None = None
    admin: Admin | None = None
    workers: list[Process] = dataclasses.field(default_factory=list)
    generation: int = 0
    secrets: list[str] = dataclasses.field(default_factory=list)
    """Token values a test made itself; with the server's token files and the workers' credentials,
    none may appear in a log or a CLI output (checked at teardown)."""
    outputs: list[str] = dataclasses.field(default_factory=list)
    """What CLIs the test ran printed (a new token's one printing excepted)."""

    def start_server(self, port: int = 0, *, extra_args: tuple[str, ...] = (),
                     env: dict[str, str] | None = None) -> ServerProcess:
        if self.server is not None and self.server.popen.poll() is None:
            self.server.stop()
        self.generation += 1
        self.server = start_server(self.root / "data", log_dir=self.root / "logs", db_url=self.db_url,
                                   port=port, heartbeat_interval=HEARTBEAT, name=f"server-{self.generation}",
                                   extra_args=extra_args, env=env)
        if self.admin is not None:
            self.admin.close()
        self.admin = Admin(self.server.address)
        return self.server

    def add_worker(self, name: str, *, slots: int = 1, labels: dict[str, str] | None = None,
                   target: str | None = None, extra_args: tuple[str, ...] = ()) -> Process:
        """A worker of the server, or of ``target`` (a proxy in front of it)."""
        assert self.server is not None
        worker = start_worker(target or self.server.address, name=name, log_dir=self.root / "logs",
                              cache_dir=self.root / "cache" / name, slots=slots, labels=labels,
                              extra_args=extra_args, token_file=self.server.worker_token_file)
        self.workers.append(worker)
        return worker

    @property
    def api(self) -> Admin:
        assert self.admin is not None
        return self.admin

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted((self.root / "logs").glob("*.log")))

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
        return [f"{what} in {where}" for where, text in texts.items() for value, what in secrets.items()
                if value in text]

    def close(self) -> list[tuple[str, int]]:
        codes = [(w.name, w.stop()) for w in self.workers if w.popen.returncode is None]
        if self.admin is not None:
            self.admin.close()
        if self.server is not None and self.server.popen.returncode is None:
            codes.append((self.server.name, self.server.stop()))
        return codes


@pytest.fixture
def cluster(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(root=tmp_path, db_url=db_url)
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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


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
