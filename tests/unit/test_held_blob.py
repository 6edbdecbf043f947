"""A fetched wheel held in memory: read like a file, kept within its budget, written to the cache after."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import threading
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from netdist.errors import ArtifactError
from netdist.worker.blob_source import DirectorySource
from netdist.worker.cache import ArtifactCache
from netdist.worker.held_blob import ChunkReader, HeldBlob, MemoryBudget, receive


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def from_chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@given(
    data=st.binary(max_size=300),
    size=st.integers(1, 40),
    steps=st.lists(st.tuples(st.integers(-350, 350), st.sampled_from([0, 1, 2]), st.integers(-1, 120)), max_size=12),
)
def test_a_chunk_reader_reads_and_seeks_as_bytes_io_does(
    data: bytes, size: int, steps: list[tuple[int, int, int]]
) -> None:
    reader, model = ChunkReader(split(data, size), name="x"), io.BytesIO(data)
    for offset, whence, n in steps:
        if (model.tell() if whence == 1 else len(data) if whence == 2 else 0) + offset < 0:
            with pytest.raises(ValueError, match="negative seek"):
                reader.seek(offset, whence)
            continue
        assert reader.seek(offset, whence) == model.seek(offset, whence)
        assert reader.read(n) == model.read(n)
        assert reader.tell() == model.tell()


def test_zipfile_reads_a_wheel_from_its_chunks(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pkg/__init__.py", "X = 1\n")
        archive.writestr("pkg/data.bin", os.urandom(100_000))
    data = buffer.getvalue()
    with zipfile.ZipFile(ChunkReader(split(data, 4096), name="w")) as archive:
        assert archive.read("pkg/__init__.py") == b"X = 1\n"
        assert archive.read("pkg/data.bin") == zipfile.ZipFile(io.BytesIO(data)).read("pkg/data.bin")


def test_a_blob_within_the_budget_is_held_until_released(tmp_path: Path) -> None:
    data = os.urandom(1000)
    budget = MemoryBudget(4000)
    held = asyncio.run(receive(from_chunks(*split(data, 100)), sha(data), tmp_path / "blob", budget))
    assert isinstance(held, HeldBlob) and held.size == 1000
    assert budget.left == 3000
    assert not (tmp_path / "blob").exists()
    assert held.reader().read() == data
    held.write(tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    held.release()
    held.release()
    assert budget.left == 4000


def test_a_blob_past_the_budget_goes_to_its_file_whole(tmp_path: Path) -> None:
    data = os.urandom(1000)
    budget = MemoryBudget(450)
    spilled = asyncio.run(receive(from_chunks(*split(data, 100)), sha(data), tmp_path / "blob", budget))
    assert spilled == tmp_path / "blob"
    assert spilled.read_bytes() == data
    assert budget.left == 450


@pytest.mark.parametrize("limit", [4000, 450], ids=["held", "spilled"])
def test_a_blob_with_the_wrong_hash_is_refused_and_gives_its_room_back(tmp_path: Path, limit: int) -> None:
    budget = MemoryBudget(limit)
    with pytest.raises(ArtifactError, match="failed verification"):
        asyncio.run(receive(from_chunks(*split(os.urandom(1000), 100)), "0" * 64, tmp_path / "blob", budget))
    assert budget.left == limit
    assert list(tmp_path.iterdir()) == []


def test_a_broken_fetch_gives_its_room_back(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 100
        raise ArtifactError("cannot fetch: UNAVAILABLE")

    budget = MemoryBudget(4000)
    with pytest.raises(ArtifactError, match="UNAVAILABLE"):
        asyncio.run(receive(broken(), "0" * 64, tmp_path / "blob", budget))
    assert budget.left == 4000


def wheel_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("greet/__init__.py", "HELLO = 'hi'\n")
        archive.writestr("greet-1.0.dist-info/METADATA", "Name: greet\nVersion: 1.0\n")
    return buffer.getvalue()


def server_dir(tmp_path: Path, *blobs: bytes) -> Path:
    server = tmp_path / "server"
    server.mkdir()
    for blob in blobs:
        (server / sha(blob)).write_bytes(blob)
    return server


SCRIPT = b"def process(job_input, ctx):\n    return 1\n"


def cold_cache(tmp_path: Path, budget: MemoryBudget, *, chunk_size: int = 64 * 1024) -> tuple[ArtifactCache, bytes]:
    """An empty cache whose source has SCRIPT and a wheel; the wheel's bytes."""
    wheel = wheel_bytes()
    source = DirectorySource(server_dir(tmp_path, SCRIPT, wheel), chunk_size=chunk_size)
    return ArtifactCache(tmp_path / "cache", source, memory=budget), wheel


def test_a_cold_wheel_is_unpacked_from_memory_then_written_to_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = MemoryBudget(10_000)
    cache, wheel = cold_cache(tmp_path, budget)
    may_write = threading.Event()
    write = HeldBlob.write

    def gated_write(self: HeldBlob, dest: Path) -> Path:
        assert may_write.wait(10), "the test never let the write go"
        return write(self, dest)

    monkeypatch.setattr(HeldBlob, "write", gated_write)

    async def main() -> None:
        env = await cache.environment(sha(SCRIPT), [sha(wheel)])  # ready while the wheel's write waits
        assert (env.wheel_dirs[0] / "greet" / "__init__.py").read_text() == "HELLO = 'hi'\n"
        assert not cache.blob_path(sha(wheel)).exists()
        assert budget.left == 10_000 - len(wheel)  # still held
        may_write.set()
        await cache.close()

    asyncio.run(main())
    assert cache.blob_path(sha(wheel)).read_bytes() == wheel
    assert budget.left == 10_000
    assert asyncio.run(cache.fetch(sha(wheel))) == cache.blob_path(sha(wheel))  # verified: not hashed again
    assert cache.full_checks == 0


def test_a_wheel_past_the_memory_budget_is_unpacked_from_its_file(tmp_path: Path) -> None:
    budget = MemoryBudget(len(wheel_bytes()) // 2)
    cache, wheel = cold_cache(tmp_path, budget, chunk_size=64)
    env = asyncio.run(cache.environment(sha(SCRIPT), [sha(wheel)]))
    assert (env.wheel_dirs[0] / "greet" / "__init__.py").is_file()
    assert cache.blob_path(sha(wheel)).read_bytes() == wheel
    assert budget.left == len(wheel) // 2


def test_a_held_wheel_the_cache_cannot_write_leaves_a_working_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = MemoryBudget(10_000)
    cache, wheel = cold_cache(tmp_path, budget)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "blobs").write_text("a file where the directory should be")

    async def main() -> None:
        env = await cache.environment(sha(SCRIPT), [sha(wheel)])
        await cache.close()
        assert (env.wheel_dirs[0] / "greet" / "__init__.py").is_file()
        assert cache.cached_environment(sha(SCRIPT), [sha(wheel)]) == env

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert any("cannot keep wheel" in r.getMessage() for r in caplog.records)
    assert budget.left == 10_000


class OverlapSource(DirectorySource):
    """Blobs from a directory, a chunk per loop turn, counting the fetches under way at once."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, chunk_size=16)
        self.active = self.most = 0

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            async for chunk in super().chunks(sha256):
                await asyncio.sleep(0)
                yield chunk
        finally:
            self.active -= 1


def test_a_new_environment_fetches_two_wheels_at_a_time_so_one_unpacks_while_the_next_arrives(
    tmp_path: Path,
) -> None:
    wheels = []
    for n in range(5):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"dep{n}/__init__.py", f"N = {n}\n")
        wheels.append(buffer.getvalue())
    source = OverlapSource(server_dir(tmp_path, SCRIPT, *wheels))
    cache = ArtifactCache(tmp_path / "cache", source)

    async def main() -> None:
        env = await cache.environment(sha(SCRIPT), [sha(w) for w in wheels])
        assert [(d / f"dep{n}" / "__init__.py").read_text() for n, d in enumerate(env.wheel_dirs)] == [
            f"N = {n}\n" for n in range(5)
        ]
        await cache.close()

    asyncio.run(main())
    assert source.most == 2
