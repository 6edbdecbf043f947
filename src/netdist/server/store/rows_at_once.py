"""Many rows of one write in a few statements: the store writer's way around the GIL on SQLite.

Python's sqlite3 releases the GIL around every step of a statement, so an
``executemany`` of N rows lets go of it N times, and must take it back N times.
The writer runs on its own thread while the event loop keeps the GIL busy: each
take-back waits for the loop to let go (up to the 5 ms switch interval), and
each forced switch costs the loop too. Measured on the benchmark machine,
inserting and leasing 300 rows per transaction against a thread that spins in
Python: 152 rows/s with ``executemany``, 14,486 rows/s as one statement per
chunk of rows; alone, 135,282 against 198,351 rows/s.

So on SQLite (3.33 and later, for ``UPDATE ... FROM``) a write of many rows is
one statement per chunk: ``... FROM (VALUES (?, ?), (?, ?), ...) AS v``, in
which the rows' values are ``v.column1``, ``v.column2``, ... A chunk is padded
with rows of NULLs to one of a few sizes, so SQLite compiles a handful of
statements once (the driver keeps them prepared) instead of one per count;
the statement ignores those rows (an id of NULL matches no row, and an insert
skips them). One row alone goes as the plain statement, as before (a lone job's
writes). Elsewhere (PostgreSQL, an older SQLite) it is the driver's
``executemany``, whose rows the statement's "?" form takes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection

CHUNK_ROWS = (4, 16, 64, 256)
"""The sizes a chunk is padded to; the last is the most rows per statement (its variables stay under
SQLite's limit of 32,766)."""
UPDATE_FROM_SQLITE = (3, 33, 0)


class RowsSql(NamedTuple):
    """One write of many rows, in its two forms."""

    each: str
    """The statement for one row, with a "?" per value in the row's order."""
    at_once: str
    """The statement for many, with "{}" where the VALUES rows go."""
    width: int
    """Values per row."""


def many(conn: Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> int:
    """Driver-level executemany of ``sql`` (with ``?`` placeholders); returns the rows changed."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    return conn.exec_driver_sql(sql, list(rows)).rowcount


def rows_at_once(conn: Connection, form: RowsSql, rows: Sequence[tuple[object, ...]]) -> int:
    """Write ``rows`` with ``form``; returns the rows changed (inserted, updated)."""
    if len(rows) <= 1 or not _at_once(conn):  # one row: the plain statement, as a lone job's writes were
        return many(conn, form.each, rows)
    changed = 0
    start, count, width = 0, len(rows), form.width
    while start < count:
        size = next((n for n in CHUNK_ROWS if n >= count - start), CHUNK_ROWS[-1])
        chunk = rows[start : start + size]
        start += size
        values = list(itertools.chain.from_iterable(chunk))
        if len(values) != len(chunk) * width:
            raise ValueError(f"rows of {width} values expected for {form.each!r}")
        values.extend(itertools.repeat(None, (size - len(chunk)) * width))
        changed += conn.exec_driver_sql(_statement(form.at_once, width, size), tuple(values)).rowcount
    return changed


def _at_once(conn: Connection) -> bool:
    dialect = conn.dialect
    return dialect.name == "sqlite" and getattr(dialect.dbapi, "sqlite_version_info", (0,)) >= UPDATE_FROM_SQLITE


@functools.cache
def _statement(at_once: str, width: int, size: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return at_once.format(", ".join(itertools.repeat(row, size)))
