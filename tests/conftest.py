from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.inprocess import InProcessServer, in_process


def _postgres_url() -> Iterator[str | None]:
    try:
        import psycopg
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    name = f"netdist_test_{uuid.uuid4().hex[:10]}"
    try:
        assert psycopg is not None
        with psycopg.connect("dbname=postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL is required in CI: {exc}") from exc
        yield None
        return
    try:
        yield f"postgresql+psycopg:///{name}"
    finally:
        with psycopg.connect("dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'netdist.db'}"
        return
    gen = _postgres_url()
    url = next(gen)
    if url is None:
        pytest.skip("no PostgreSQL server reachable (CI never skips)")
    yield url
    for _ in gen:
        pass


@pytest.fixture
def app_server(tmp_path: Path, db_url: str) -> Iterator[InProcessServer]:
    """The real server app in this process (tests/inprocess.py) on a fresh store, on ``127.0.0.1:0``;
    stopped, and checked to stop cleanly, at teardown. ``Admin(app_server.address)`` and
    ``start_worker(app_server.address, ...)`` find its tokens; ``app_server.inspect`` reads its state."""
    with in_process(
        tmp_path / "data", log_dir=tmp_path / "logs", db_url=db_url, heartbeat_interval_seconds=0.3
    ) as server:
        yield server


# Fixtures read request.node.rep_call to print the logs of a test that failed.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
