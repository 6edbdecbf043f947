"""The store's URL as netdist-server's commands take it (``--db``, or the SQLite file in ``--data-dir``).

Checked before anything opens it: a URL SQLAlchemy cannot parse, a dialect it
does not know or a driver that is not installed is a usage error (exit 2), in
one line; a database that cannot be reached is the caller's to report
(exit 3), with :func:`netdist.errors.first_line` of its error.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from netdist.cli_boundary import fail
from netdist.errors import first_line
from netdist.exit_codes import ExitCode
from netdist.server.store.engine import default_url, describe


def store_url(db_url: str | None, data_dir: Path | None) -> str:
    """``--db``, else the SQLite file in ``--data-dir`` (which must be a directory); exits 2 without either."""
    if db_url is not None:
        return db_url
    if data_dir is None:
        fail("UsageError: give the store: --db URL, or --data-dir DIR for its SQLite file", ExitCode.USAGE)
    if not data_dir.is_dir():
        fail(
            f"UsageError: --data-dir {data_dir} is not a directory: give the server's data dir, or --db URL",
            ExitCode.USAGE,
        )
    return default_url(data_dir)


def checked_url(url: str) -> URL:
    """``url`` parsed, its dialect and driver importable; exits 2 naming what is wrong."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        fail(f"UsageError: --db {url!r} is not a SQLAlchemy URL: {first_line(exc)}", ExitCode.USAGE)
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as exc:
        fail(f"UsageError: --db {describe(url)}: {first_line(exc)}", ExitCode.USAGE)
    return parsed
