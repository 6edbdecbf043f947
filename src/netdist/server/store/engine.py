"""Open the database and bring its schema up to date."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'netdist.db').resolve()}"


_WRITES = "netdist_writes"


def for_writing(conn: Connection) -> Connection:
    """``conn`` (just checked out) begins its transactions for writing: SQLite takes the write lock at
    BEGIN (IMMEDIATE), so a transaction never fails for a lock halfway through.

    An option of this checkout only: the pooled connection forgets it, and a read that gets the same
    connection later begins a plain read transaction, which in WAL mode never waits for the writer."""
    return conn.execution_options(**{_WRITES: True})


WRITER_CACHE_KIB = 64 * 1024
"""The store writer's SQLite page cache (SQLite's default: 2 MiB for each connection)."""


def writer_connection(engine: Engine) -> Connection:
    """The store writer's own connection, kept from one batch to the next: ``for_writing``, and on
    SQLite a page cache of WRITER_CACHE_KIB, so that what a batch wrote is read back from memory by
    the next (a large job's input, read back for its lease and again for its result, was most of the
    writer's reads of the file). Only this connection's: the pool's readers keep the default."""
    conn = for_writing(engine.connect())
    driver = conn.connection.driver_connection
    if conn.dialect.name == "sqlite" and driver is not None:
        driver.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    return conn


def open_engine(url: str) -> Engine:
    """An engine with SQLite set to WAL and full fsync; migrations applied."""
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in make_url(url).query:
            # A database that does not answer is an outage the writer waits out, not a hang.
            kwargs["connect_args"] = {"connect_timeout": 10}
    engine = create_engine(url, **kwargs)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's BEGIN drive transactions (pysqlite's own is off).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Debian's and others' SQLite is built to zero every freed page (SECURE_DELETE), which
            # doubles what rewriting a large job row writes; FAST zeroes only where it costs no I/O.
            cur.execute("PRAGMA secure_delete=FAST")
            # A statement that changes many rows keeps the pages it changes in a statement journal, which
            # SQLite spills past 64 KiB to a temp file in /var/tmp: a file made, written a page at a time
            # and deleted for each of the writer's many-row writes, holding job data outside the data dir.
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITES) else "BEGIN")

    migrate(engine)
    return engine


log = logging.getLogger("netdist.server.store")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; one log line when that changed it.

    Alembic's own INFO lines (one per revision, a dozen on a new store) stay out of the server's log."""
    config = Config()
    config.set_main_option("script_location", "netdist.server.store:migrations")
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(max(logging.WARNING, level))
    try:
        with engine.begin() as conn:
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    finally:
        alembic_log.setLevel(level)
    if after != before:
        what = "created the schema" if before is None else f"upgraded the schema from revision {before}"
        log.info("%s (revision %s)", what, after)


def read_only_url(url: URL, *, what: str = "a check") -> URL:
    """SQLite opened read only, and never created (``what`` writes nothing); other URLs as given."""
    if url.get_backend_name() != "sqlite":
        return url
    if not url.database or url.database == ":memory:":
        raise ValueError("a SQLite URL needs the path of the store's file")
    if not Path(url.database).is_file():
        raise ValueError(f"no SQLite file at {url.database} ({what} never creates one)")
    return url.set(database=f"file:{quote(url.database, safe='/')}", query={**url.query, "mode": "ro", "uri": "true"})


def describe(url: str) -> str:
    """The URL without its password, for display."""
    return make_url(url).render_as_string(hide_password=True)
