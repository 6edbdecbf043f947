"""A job row holding a large input is not written twice over when it changes (SQLite's secure_delete)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from netdist.server.lease_model import Lease
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import for_writing, open_engine
from tests.store_rows import insert_handler

INPUT = json.dumps({"pad": "x" * 1_000_000})


def wal_bytes_of(engine: Engine, path: Path, write: object) -> int:
    """How many bytes of WAL one committed write takes, from an emptied WAL."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy: done
    with for_writing(engine.connect()) as conn, conn.begin():
        write(conn)  # type: ignore[operator]
    return Path(f"{path}-wal").stat().st_size


def test_leasing_a_job_with_a_megabyte_input_writes_the_row_once(tmp_path: Path) -> None:
    """A lease changes the row's size, so SQLite writes the row anew with its megabyte. Built with
    SECURE_DELETE (Debian's is), it also overwrote the old row's pages with zeros: twice the megabyte."""
    path = tmp_path / "store.db"
    engine = open_engine(f"sqlite:///{path}")
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
    inserted = wal_bytes_of(engine, path, lambda conn: job_store.insert(conn, "h", [1], [(INPUT, "null")]))
    lease = Lease(
        job_id=1, lease_no=1, handler_id="h", worker_id="w-1", attempt=1, input=b"", leased_at=1.5, leased_mono=1.5
    )
    leased = wal_bytes_of(engine, path, lambda conn: job_store.lease(conn, [lease]))
    engine.dispose()
    assert len(INPUT) < inserted < 1.1 * len(INPUT)
    assert leased < 1.1 * len(INPUT), f"a lease wrote {leased} bytes of WAL for a row of {len(INPUT)}"
