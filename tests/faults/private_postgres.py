"""A PostgreSQL server of the test's own, to stop and start at will.

The machine's cluster serves everyone's tests: a fault test never touches it.
This one lives in a fresh data directory, listens on a unix socket only (no
TCP port to collide with), and is stopped and deleted at teardown.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 5432  # names the socket file only: listen_addresses is empty


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        # Not under tmp_path: pytest keeps that 0700 to root, and the server runs as postgres.
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "postgres.log"

    def _as_postgres(self, *args: str | Path, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, args)],
            check=True,
            timeout=timeout,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def init(self) -> None:
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres")
        shutil.chown(self.socket_dir, "postgres")
        self._as_postgres(BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self.sql("CREATE DATABASE netdist")

    def start(self) -> None:
        self._as_postgres(
            BIN / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {PORT} -k {self.socket_dir} -c listen_addresses='' -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(
            host=str(self.socket_dir), port=PORT, user="postgres", dbname=database, autocommit=True, connect_timeout=10
        ) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/netdist?host={self.socket_dir}&port={PORT}"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip(f"no {BIN / 'initdb'} (or runuser) to start a private PostgreSQL")
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="netdist-pg-")))
    try:
        pg.init()
        yield pg
    finally:
        if pg.running():
            with contextlib.suppress(subprocess.SubprocessError):
                pg.stop("immediate")
        shutil.rmtree(pg.root, ignore_errors=True)
