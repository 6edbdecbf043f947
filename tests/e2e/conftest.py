"""The end-to-end tier: a real server, real workers, and ``netdist-admin`` run as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    c = Cluster(root=tmp_path, db_url=f"sqlite:///{tmp_path / 'netdist.db'}")
    c.start_server()
    monkeypatch.setenv("NETDIST_DATA_DIR", str(tmp_path / "data"))  # as next to the server: its admin.token
    try:
        yield c
    finally:
        codes = c.close()
        assert all(code == 0 for _, code in codes), f"{codes}\n{c.logs()}"
        c.outputs.extend(OUTPUTS)
        OUTPUTS.clear()
        assert not c.leaks(), f"secrets leaked: {c.leaks()}"


OUTPUTS: list[str] = []
"""What each netdist-admin run of the test printed: no token may show in it."""


def admin(
    address: str, *args: str, timeout: str = "10", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``netdist-admin`` as an operator runs it: the cluster sets NETDIST_DATA_DIR, where it finds the admin token."""
    done = subprocess.run(
        [sys.executable, "-m", "netdist.adminctl", "--server", address, "--timeout", timeout, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    OUTPUTS.extend((done.stdout, done.stderr))
    return done


def ok(address: str, *args: str) -> str:
    done = admin(address, *args)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout
