"""One server per PostgreSQL database: a session advisory lock, held on a connection of its own.

Two servers on one database (a second one started for "high availability", or with another data dir)
would each run the same handlers and lease the same jobs, as two on one data dir did
(server/data_dir_lock.py, which covers SQLite, whose file is in the data dir by default). The second
now refuses to start, naming the holder by the ``application_name`` its lock connection set.

The lock lives as long as its connection: PostgreSQL lets go of it when the server process ends, kill -9
included, and within about 40 s when its machine dies (``KEEPALIVES``). A connection lost while the server
runs (the database restarted) takes the lock with it; the server goes on without it.
"""

from __future__ import annotations

import os
import socket

from sqlalchemy import Connection, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from netdist.errors import StoreInUseError
from netdist.printable import printable

KEY = (0x6E657464, 1)
"""The advisory lock's two int4 keys ("netd", 1): one per database."""

KEEPALIVES = (("tcp_keepalives_idle", "20"), ("tcp_keepalives_interval", "5"), ("tcp_keepalives_count", "4"))
"""The database probes this session's TCP connection after 20 s of quiet, every 5 s, and ends it after 4
unanswered probes: the lock of a server whose machine died (no FIN ever comes) is let go within about
40 s, not after the system's two hours. Ignored on a unix socket, where the two ends share a machine."""

_HOLDER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :k1 AND l.objid = :k2 AND l.objsubid = 2"
)


def lock_store(url: str, database: str) -> Connection | None:
    """Take the database's lock, before any migration, on a connection of its own kept open (returned:
    close it to let go), or raise StoreInUseError naming the holder. None for SQLite (the data dir's
    lock covers it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}  # as open_engine: no hang
    engine = create_engine(parsed, poolclass=NullPool, connect_args=args)  # one connection, closed with the lock
    conn = engine.connect()
    try:
        name = f"netdist-server {socket.gethostname()} pid {os.getpid()}"[:63]
        conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
        for setting, value in KEEPALIVES:
            conn.execute(text("SELECT set_config(:setting, :value, false)"), {"setting": setting, "value": value})
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k1, :k2)"), {"k1": KEY[0], "k2": KEY[1]}).scalar()
        holder = None if got else conn.execute(_HOLDER, {"k1": KEY[0], "k2": KEY[1]}).scalar()
        conn.commit()  # the lock is the session's: no transaction stays open on this connection
    except BaseException:
        conn.close()
        raise
    if not got:
        conn.close()
        raise StoreInUseError(
            f"the store {database} is in use by another netdist server"
            f"{f' ({printable(str(holder))})' if holder else ''}: stop it first, or give this one its own database"
        )
    return conn
