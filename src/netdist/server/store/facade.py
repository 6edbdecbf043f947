"""The store as the rest of the server sees it: group-committed writes, threaded reads.

``write`` and ``read`` serve operators' calls: during an outage of the
database they fail at once with StoreUnavailableError or DiskFullError
instead of hanging. The server's own work uses ``writer.run``, which waits
through an outage and resumes by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from netdist.server.store.outage import StoreHealth, classify
from netdist.server.store.writer import GroupCommitWriter, HealthListener

T = TypeVar("T")


class Store:
    def __init__(self, engine: Engine, *, database: str = "", on_health_change: HealthListener | None = None) -> None:
        self.engine = engine
        self.writer = GroupCommitWriter(engine, database=database, on_change=on_health_change)

    @property
    def health(self) -> StoreHealth:
        """The store's state as the writer last saw it (from memory)."""
        return self.writer.health

    async def write(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in the next group commit; an outage fails it at once."""
        return await self.writer.run_or_fail(fn, *args, **kwargs)

    async def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` on a connection of its own, in a thread; an outage fails it."""

        def run() -> T:
            try:
                with self.engine.connect() as conn:
                    return fn(conn, *args, **kwargs)
            except Exception as exc:
                outage = classify(exc)
                if outage is None:
                    raise
                raise outage.error(self.writer.database) from exc

        return await asyncio.to_thread(run)

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()
