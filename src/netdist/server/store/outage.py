"""Which database errors are an outage (wait and try again) and which are a bug.

An outage is the store's trouble, not the operation's: the database cannot be
reached (down, restarting, the connection lost, locked by someone else) or the
disk holding it is full. The same operation succeeds once it is over, so the
server's own work waits for it. Anything else (a constraint, a syntax error, a
missing table) fails the operation that caused it, at once.
"""

from __future__ import annotations

import dataclasses
import enum
import time

from sqlalchemy import exc as sa_exc

from netdist.errors import DiskFullError, NetDistError, StoreUnavailableError

# SQLite primary result codes (the low byte of sqlite3.Error.sqlite_errorcode).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 6, 10, 13, 14
_SQLITE_UNAVAILABLE = {_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_CANTOPEN}
# PostgreSQL SQLSTATEs: 53100 disk_full; 53xxx insufficient resources (53300 too many connections);
# class 08 connection exceptions; 57P01-57P05 admin / crash shutdown, cannot connect now, idle timeouts.
_PG_FULL = {"53100"}
_PG_UNAVAILABLE_CLASSES = ("08", "57P", "53")
_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded")
_REASON_CHARS = 200


class OutageKind(enum.StrEnum):
    UNAVAILABLE = "unavailable"
    FULL = "full"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outage:
    kind: OutageKind
    reason: str  # the driver's words, first line, shortened

    def error(self, database: str) -> NetDistError:
        """What an operator's call answers during this outage."""
        if self.kind == OutageKind.FULL:
            return DiskFullError(
                f"the disk holding the database ({database}) is full: {self.reason}; "
                "free space there: the server retries and resumes by itself"
            )
        return StoreUnavailableError(
            f"the store is unavailable ({self.reason}); the server retries and resumes by itself"
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoreHealth:
    """The store as the writer last saw it: healthy, or in an outage since ``since``."""

    outage: Outage | None = None
    since: float = 0.0  # time.time() when the outage began
    since_monotonic: float = 0.0

    @property
    def healthy(self) -> bool:
        return self.outage is None

    @property
    def state(self) -> str:
        return "ok" if self.outage is None else self.outage.kind.value

    def seconds(self) -> float:
        """How long the outage has lasted (0 when healthy)."""
        return time.monotonic() - self.since_monotonic if self.outage is not None else 0.0


def classify(exc: BaseException) -> Outage | None:
    """The outage ``exc`` shows, or None when it is the operation's own error."""
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection to give
        return Outage(kind=OutageKind.UNAVAILABLE, reason=_short(exc))
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    reason = _short(orig if orig is not None else exc)
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        primary = sqlite_code & 0xFF
        if primary == _SQLITE_FULL:
            return Outage(kind=OutageKind.FULL, reason=reason)
        if primary in _SQLITE_UNAVAILABLE:
            return Outage(kind=OutageKind.UNAVAILABLE, reason=reason)
        return None
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _PG_FULL or any(t in reason.lower() for t in _FULL_TEXT):
        return Outage(kind=OutageKind.FULL, reason=reason)
    if isinstance(sqlstate, str) and sqlstate.startswith(_PG_UNAVAILABLE_CLASSES):
        return Outage(kind=OutageKind.UNAVAILABLE, reason=reason)
    if exc.connection_invalidated:
        return Outage(kind=OutageKind.UNAVAILABLE, reason=reason)
    if sqlstate is None and isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        # No SQLSTATE: the server never answered (refused, no socket, closed connection).
        return Outage(kind=OutageKind.UNAVAILABLE, reason=reason)
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    return first if len(first) <= _REASON_CHARS else first[: _REASON_CHARS - 1] + "…"
