"""The store's job listing, a page at a time (``jobs list``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from netdist.server.states import JobStatus
from netdist.server.store import jobs as job_store
from netdist.server.store.engine import for_writing, open_engine
from tests.store_rows import insert_handler


def _store(tmp_path: Path, count: int) -> Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
        job_store.insert(conn, "h", list(range(1, count + 1)), [('{"n": 1}', "null")] * count)
    return engine


def test_pages_go_on_below_the_last_id_seen_newest_first(tmp_path: Path) -> None:
    engine = _store(tmp_path, 7)
    try:
        with engine.connect() as conn:
            first = [r.id for r in job_store.listing(conn, "h", JobStatus.AVAILABLE, 3)]
            second = [r.id for r in job_store.listing(conn, "h", JobStatus.AVAILABLE, 3, before_id=first[-1])]
            last = [r.id for r in job_store.listing(conn, None, JobStatus.AVAILABLE, 3, before_id=second[-1])]
    finally:
        engine.dispose()
    assert (first, second, last) == ([7, 6, 5], [4, 3, 2], [1])
