"""The store's available jobs, a page of ids at a time, then their rows (`jobs list --status available`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from netdist.server.store import jobs as job_store
from netdist.server.store.engine import for_writing, open_engine
from tests.store_rows import insert_handler


def _store(tmp_path: Path, count: int) -> Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with for_writing(engine.connect()) as conn, conn.begin():
        insert_handler(conn)
        job_store.insert(conn, "h", list(range(1, count + 1)), [('{"n": 1}', "null")] * count)
    return engine


def test_pages_of_available_jobs_go_on_below_the_last_id_seen_newest_first(tmp_path: Path) -> None:
    engine = _store(tmp_path, 7)
    try:
        with engine.connect() as conn:
            first = job_store.available_refs(conn, "h", 3)
            second = job_store.available_refs(conn, "h", 3, before_id=first[-1][0])
            last = job_store.available_refs(conn, None, 3, before_id=second[-1][0])
            rows = job_store.listed_rows(conn, [2, 6, 4])
    finally:
        engine.dispose()
    assert (first, second, last) == ([(7, 0), (6, 0), (5, 0)], [(4, 0), (3, 0), (2, 0)], [(1, 0)])
    assert [(r.id, r.status, r.input) for r in rows] == [
        (6, "available", '{"n": 1}'),
        (4, "available", '{"n": 1}'),
        (2, "available", '{"n": 1}'),
    ]
