"""The artifact cache: verified writes, safe wheel unpacking, one fetch per hash."""

from __future__ import annotations

import asyncio
import hashlib
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from netdist.worker.cache import (
    ArtifactCache,
    ArtifactError,
    DirectorySource,
    check_sha256,
    unpack_wheel,
    write_verified,
)
from netdist.worker.host import claim_worker_id, load_worker_id


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(path: Path, members: dict[str, str]) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path.read_bytes()


WHEEL_MEMBERS = {
    "greet/__init__.py": "def hello(name):\n    return f'hello {name}'\n",
    "greet-1.0.dist-info/METADATA": "Name: greet\nVersion: 1.0\n",
    "greet-1.0.data/purelib/extra_mod.py": "VALUE = 42\n",
    "greet-1.0.data/scripts/greet-cli": "#!python\n",
}


class CountingSource(DirectorySource):
    """Blobs from a directory, counting fetches; the first one waits for a go."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, chunk_size=7)
        self.calls: list[str] = []
        self.go = asyncio.Event()

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        self.calls.append(sha256)
        await self.go.wait()
        async for chunk in super().chunks(sha256):
            yield chunk


async def from_bytes(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_write_verified_accepts_the_right_bytes(tmp_path: Path) -> None:
    data = b"print('hi')\n"
    dest = tmp_path / "blobs" / sha(data)
    asyncio.run(write_verified(from_bytes(data[:3], data[3:]), sha(data), dest))
    assert dest.read_bytes() == data
    assert list(dest.parent.iterdir()) == [dest]


def test_write_verified_refuses_a_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "blobs" / sha(b"expected")
    with pytest.raises(ArtifactError, match="failed verification"):
        asyncio.run(
            write_verified(from_bytes(b"something else"), sha(b"expected"), dest)
        )
    assert list(dest.parent.iterdir()) == []


def test_unpack_wheel_maps_purelib_and_skips_scripts(tmp_path: Path) -> None:
    wheel = tmp_path / "greet-1.0-py3-none-any.whl"
    make_wheel(wheel, WHEEL_MEMBERS)
    dest = tmp_path / "envs" / "abc"
    assert unpack_wheel(wheel, dest) == dest
    assert (dest / "greet" / "__init__.py").is_file()
    assert (dest / "extra_mod.py").read_text() == "VALUE = 42\n"
    assert not (dest / "greet-1.0.data").exists()
    assert [p.name for p in dest.parent.iterdir()] == ["abc"]  # no temp dir left
    assert unpack_wheel(wheel, dest) == dest  # idempotent


@pytest.mark.parametrize(
    "member",
    [
        "../evil.py",
        "pkg/../../evil.py",
        "/etc/evil.py",
        "C:/evil.py",
        "pkg\\..\\evil.py",
    ],
)
def test_unpack_wheel_refuses_unsafe_paths(tmp_path: Path, member: str) -> None:
    wheel = tmp_path / "bad.whl"
    make_wheel(wheel, {"ok/__init__.py": "", member: "boom"})
    dest = tmp_path / "envs" / "bad"
    with pytest.raises(ArtifactError):
        unpack_wheel(wheel, dest)
    assert not dest.exists()
    assert list((tmp_path / "envs").iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_unpack_wheel_refuses_a_non_zip(tmp_path: Path) -> None:
    wheel = tmp_path / "bad.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a zip"):
        unpack_wheel(wheel, tmp_path / "envs" / "x")


def test_check_sha256() -> None:
    check_sha256("a" * 64)
    for bad in ["A" * 64, "a" * 63, "../" + "a" * 61, ""]:
        with pytest.raises(ArtifactError):
            check_sha256(bad)


def test_environment_fetches_once_per_hash(tmp_path: Path) -> None:
    blobs = tmp_path / "server"
    blobs.mkdir()
    script = b"def process(job_input, ctx):\n    return job_input\n"
    (blobs / sha(script)).write_bytes(script)
    wheel = make_wheel(tmp_path / "greet.whl", WHEEL_MEMBERS)
    (blobs / sha(wheel)).write_bytes(wheel)
    source = CountingSource(blobs)
    cache = ArtifactCache(tmp_path / "cache", source)

    async def main() -> None:
        waiting = [
            asyncio.create_task(cache.environment(sha(script), [sha(wheel)]))
            for _ in range(5)
        ]
        while len(source.calls) < 2:
            await asyncio.sleep(0)
        source.go.set()
        environments = await asyncio.gather(*waiting)
        assert len({e.key for e in environments}) == 1
        assert cache.cached_environment(sha(script), [sha(wheel)]) == environments[0]
        env = environments[0]
        assert env.script_path == tmp_path / "cache" / "scripts" / f"{sha(script)}.py"
        assert env.script_path.read_bytes() == script
        assert env.wheel_dirs == (tmp_path / "cache" / "envs" / sha(wheel),)
        assert (env.wheel_dirs[0] / "greet" / "__init__.py").is_file()
        assert (tmp_path / "cache" / "blobs" / sha(wheel)).read_bytes() == wheel

    asyncio.run(main())
    assert sorted(source.calls) == sorted([sha(script), sha(wheel)])

    # A second cache on the same directory finds everything on disk.
    again = CountingSource(blobs)
    again.go.set()
    asyncio.run(
        ArtifactCache(tmp_path / "cache", again).environment(sha(script), [sha(wheel)])
    )
    assert again.calls == []


def test_missing_and_corrupt_blobs_are_artifact_errors(tmp_path: Path) -> None:
    blobs = tmp_path / "server"
    blobs.mkdir()
    claimed = sha(b"the real script")
    (blobs / claimed).write_bytes(b"a tampered script")
    cache = ArtifactCache(tmp_path / "cache", DirectorySource(blobs))

    with pytest.raises(ArtifactError, match="NOT_FOUND"):
        asyncio.run(cache.script("b" * 64))
    with pytest.raises(ArtifactError, match="failed verification"):
        asyncio.run(cache.script(claimed))
    assert not cache.script_path(claimed).exists()
    # A failure is not cached: once the blob is right, the fetch succeeds.
    (blobs / claimed).write_bytes(b"the real script")
    assert asyncio.run(cache.script(claimed)).read_bytes() == b"the real script"


def test_worker_id_is_created_once_and_kept(tmp_path: Path) -> None:
    first = load_worker_id(tmp_path / "cache")
    assert len(first) == 32
    assert load_worker_id(tmp_path / "cache") == first
    (tmp_path / "cache" / "worker-id").write_text("garbage")
    replaced = load_worker_id(tmp_path / "cache")
    assert replaced != first
    assert load_worker_id(tmp_path / "cache") == replaced


def test_workers_sharing_a_cache_dir_each_claim_their_own_stable_id(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    first, second = claim_worker_id(cache), claim_worker_id(cache)
    assert first.worker_id != second.worker_id
    first_id = first.worker_id
    first.lock.close()  # that worker exits
    again = claim_worker_id(cache)
    assert again.worker_id == first_id  # a restarted worker takes its old seat back
    assert claim_worker_id(cache).worker_id not in (first_id, second.worker_id)
