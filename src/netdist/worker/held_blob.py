"""A fetched blob held in memory: verified there, unpacked from there, written to the cache after.

A cold worker's first job waits for its wheels to be fetched and unpacked.
Writing each wheel to the cache first put the same bytes on the disk twice
before the job could start (the wheel, then its unpacked tree). So a wheel is
kept in memory as it arrives, as long as it fits a :class:`MemoryBudget`
shared by every blob held at once; its sha256 is checked there, its tree is
unpacked from there (:class:`ChunkReader`, no joined copy), and the cache
writes the wheel to disk after the tree is in place. A wheel that passes the
budget on its way in goes on to a file as before (what it held so far first).
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from netdist.errors import ArtifactError
from netdist.worker.blob_source import replacing, short, write_verified

MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
"""Bytes of fetched wheels the worker holds in memory at once, at most."""


class MemoryBudget:
    """What held blobs may still take; one per cache, used from its event loop."""

    def __init__(self, limit: int = MEMORY_BUDGET_BYTES) -> None:
        self.left = limit

    def take(self, n: int) -> bool:
        if n > self.left:
            return False
        self.left -= n
        return True

    def give(self, n: int) -> None:
        self.left += n


class HeldBlob:
    """A verified blob's bytes in memory, counted against a budget until released."""

    def __init__(self, sha256: str, chunks: list[bytes], budget: MemoryBudget) -> None:
        self.sha256 = sha256
        self.name = sha256  # zipfile and error messages read it
        self.size = sum(map(len, chunks))
        self._chunks = chunks
        self._budget: MemoryBudget | None = budget

    def reader(self) -> ChunkReader:
        return ChunkReader(self._chunks, name=self.sha256)

    def write(self, dest: Path) -> Path:
        """Put the bytes at ``dest``, atomically (a temp file, then os.replace)."""
        with replacing(dest) as stream:
            stream.writelines(self._chunks)
        return dest

    def release(self) -> None:
        """Drop the bytes and give their room back (once)."""
        if self._budget is not None:
            self._budget.give(self.size)
            self._budget = None
            self._chunks = []


async def receive(chunks: AsyncIterator[bytes], sha256: str, spill: Path, budget: MemoryBudget) -> HeldBlob | Path:
    """The blob held in memory if it fits ``budget``, else written to ``spill``; verified either way."""
    held: list[bytes] = []
    digest = hashlib.sha256()
    taken = 0
    try:
        async for chunk in chunks:
            if not budget.take(len(chunk)):
                budget.give(taken)
                taken = 0
                return await write_verified(_then(held, chunk, chunks), sha256, spill)
            taken += len(chunk)
            digest.update(chunk)
            held.append(chunk)
    except BaseException:
        budget.give(taken)
        raise
    actual = digest.hexdigest()
    if actual != sha256:
        budget.give(taken)
        raise ArtifactError(f"blob {short(sha256)} failed verification: its sha256 is {short(actual)}")
    return HeldBlob(sha256, held, budget)


async def _then(first: Iterable[bytes], chunk: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for held in first:
        yield held
    yield chunk
    async for more in rest:
        yield more


class ChunkReader:
    """A read-only, seekable binary file over a list of chunks, for :mod:`zipfile` (no joined copy)."""

    def __init__(self, chunks: list[bytes], *, name: str) -> None:
        self.name = name
        self._chunks = chunks
        self._starts: list[int] = []
        size = 0
        for chunk in chunks:
            self._starts.append(size)
            size += len(chunk)
        self._size = size
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        parts = []
        while self._pos < end:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            chunk, offset = self._chunks[i], self._pos - self._starts[i]
            take = min(len(chunk) - offset, end - self._pos)
            parts.append(memoryview(chunk)[offset : offset + take])
            self._pos += take
        return b"".join(parts)

    def close(self) -> None:
        """Nothing to close: the chunks belong to the blob."""
