"""The store as the rest of the server sees it: group-committed writes, threaded reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from netdist.server.store.writer import GroupCommitWriter

T = TypeVar("T")


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = GroupCommitWriter(engine)

    async def write(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in the next group commit."""
        return await self.writer.run(fn, *args, **kwargs)

    async def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` on a connection of its own, in a thread."""
        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.to_thread(run)

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()
