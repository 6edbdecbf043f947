"""The fault suite's rig: a real server and workers (tests/integration's Cluster),
proxies between them, the tally package, and the invariant checker.

Every fault test ends with ``rig.verify(...)``; the rig owns its cleanup: it
opens every gate, wakes stopped workers, stops what still runs and checks it
stopped cleanly (processes the test killed on purpose excepted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from netdist.api.v1 import admin_pb2
from netdist.testing import Admin, Process, ServerProcess, wait_until
from tests.faults.invariants import Invariants, Snapshot
from tests.faults.proxy import Proxy
from tests.faults.tally import ballast_wheel, tally_script, tally_wheel
from tests.integration.conftest import Cluster


@dataclasses.dataclass
class Rig:
    cluster: Cluster
    inv: Invariants
    root: Path
    proxies: list[Proxy] = dataclasses.field(default_factory=list)
    gates: list[Path] = dataclasses.field(default_factory=list)
    stopped: list[Process] = dataclasses.field(default_factory=list)  # SIGSTOPped, to wake at the end

    @property
    def api(self) -> Admin:
        return self.cluster.api

    @property
    def server(self) -> ServerProcess:
        return self.cluster.process

    # -- pieces --------------------------------------------------------------------------

    def proxy(self, upstream: str | None = None) -> Proxy:
        p = Proxy(upstream or self.server.address).start()
        self.proxies.append(p)
        return p

    def gate(self, name: str = "gate") -> Path:
        path = self.root / f"gate-{name}"
        self.gates.append(path)
        return path

    def upload(self, *, ballast: bool = False) -> None:
        wheels = [tally_wheel(self.root / "wheels")]
        if ballast:
            wheels.append(ballast_wheel(self.root / "wheels"))
        self.api.upload(*wheels)

    def add(self, name: str, *, settings: str = "auto-start = true", **custom: Any) -> str:
        """Add a tally job script; returns the handler id."""
        script = tally_script(self.root / f"{name}.py", job=name, settings=settings, **custom)
        return str(self.api.add_script(script).handler.id)

    def worker(
        self, name: str, *, slots: int = 1, target: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> Process:
        return self.cluster.add_worker(name, slots=slots, target=target, extra_args=extra_args)

    def worker_id(self, worker: Process) -> str:
        """The id of a connected worker (fails at once if the worker exited)."""

        def connected() -> str | None:
            if not worker.alive():
                raise AssertionError(f"worker {worker.name} exited with {worker.popen.returncode}:\n{worker.output()}")
            return next((w.id for w in self.api.workers() if w.name == worker.name and w.connected), None)

        return str(wait_until(connected, 30, what=f"worker {worker.name} to connect"))

    def finish(self, handler_id: str, timeout: float = 60.0) -> admin_pb2.HandlerInfo:
        return self.api.wait_state(handler_id, "finished", timeout=timeout)

    def jobs(self, handler_id: str) -> Snapshot:
        return self.inv.snapshot(handler_id)

    def traces(self, path: Path) -> list[tuple[str, int, int, int]]:
        """(start|end, job index, attempt, pid) per line of a trace file."""
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            what, i, attempt, pid = line.split()
            out.append((what, int(i), int(attempt), int(pid)))
        return out

    # -- faults --------------------------------------------------------------------------

    def kill_server(self) -> int:
        """SIGKILL the server (no clean shutdown); returns its port."""
        port = int(self.server.address.rsplit(":", 1)[1])
        self.server.kill()
        return port

    def restart_server(self, port: int, **kwargs: Any) -> ServerProcess:
        self.cluster.start_server(port=port, **kwargs)
        return self.cluster.process

    @contextlib.contextmanager
    def store_write_lock(self) -> Iterator[None]:
        """Hold the store's write lock: the server's writer waits at its next write to the jobs
        (reads, the test's and the server's, go on)."""
        url = make_url(self.inv.db_url)
        if url.get_backend_name() == "sqlite":
            lock = sqlite3.connect(str(url.database), timeout=30, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            return
        import psycopg

        with psycopg.connect(dbname=url.database) as pg:  # in a transaction until the block ends
            pg.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                pg.rollback()

    def kill_worker(self, worker: Process) -> None:
        """SIGKILL a worker and its job processes (its whole process group)."""
        os.killpg(worker.popen.pid, signal.SIGKILL)
        worker.popen.wait()

    def stop_worker(self, worker: Process) -> None:
        """SIGSTOP the worker process alone (its running job goes on)."""
        self.stopped.append(worker)
        worker.popen.send_signal(signal.SIGSTOP)

    def cont_worker(self, worker: Process) -> None:
        worker.popen.send_signal(signal.SIGCONT)
        self.stopped.remove(worker)

    # -- the check -------------------------------------------------------------------------

    def warmed_up(self) -> None:
        self.inv.warmed_up(self.server)

    def verify(self, handler_id: str, *, count: int, **kwargs: Any) -> Snapshot:
        return self.inv.verify(
            handler_id, count=count, api=self.api, server=self.server, workers=self.cluster.workers, **kwargs
        )

    def close(self) -> list[tuple[str, int]]:
        for path in self.gates:
            path.touch()
        for worker in self.stopped:
            worker.popen.send_signal(signal.SIGCONT)
        codes = self.cluster.close()
        for p in self.proxies:
            p.close()
        self.inv.close()
        return codes


@pytest.fixture
def rig(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    cluster = Cluster(root=tmp_path, db_url=db_url)
    cluster.start_server()
    r = Rig(cluster=cluster, inv=Invariants.open(db_url, tmp_path / "data"), root=tmp_path)
    failed = False
    try:
        yield r
    except BaseException:
        failed = True
        raise
    finally:
        codes = r.close()
        report = getattr(request.node, "rep_call", None)
        if (report is not None and report.failed) or failed:
            print(cluster.logs())  # a test that failed half-way leaves processes in any state: not checked
        else:
            bad = [(name, code) for name, code in codes if code != 0]
            assert not bad, f"processes did not stop cleanly: {bad}\n{cluster.logs()}"
            Invariants.worker_caches_are_whole(cluster.workers)
            assert not cluster.leaks(), f"secrets leaked: {cluster.leaks()}"
