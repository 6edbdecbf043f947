"""The artifact cache: verified writes, safe wheel unpacking, one fetch per hash."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from netdist.errors import ArtifactError
from netdist.worker.blob_source import DirectorySource, check_sha256, write_verified
from netdist.worker.cache import RECHECK_SECONDS, ArtifactCache
from netdist.worker.identity import claim_worker_id, load_worker_id
from netdist.worker.integrity import unpack_wheel
from netdist.worker.job import Environment
from tests.clock import ManualClock


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
        asyncio.run(write_verified(from_bytes(b"something else"), sha(b"expected"), dest))
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
        waiting = [asyncio.create_task(cache.environment(sha(script), [sha(wheel)])) for _ in range(5)]
        while len(source.calls) < 2:  # noqa: ASYNC110  (the fake source counts calls; a yield lets the tasks run)
            await asyncio.sleep(0)
        source.go.set()
        environments = await asyncio.gather(*waiting)
        assert len(set(environments)) == 1
        assert cache.cached_environment(sha(script), [sha(wheel)]) == environments[0]
        env = environments[0]
        assert env.script_path == tmp_path / "cache" / "scripts" / f"{sha(script)}.py"
        assert env.script_path.read_bytes() == script
        assert env.wheel_dirs == (tmp_path / "cache" / "envs" / sha(wheel),)
        assert (env.wheel_dirs[0] / "greet" / "__init__.py").is_file()
        await cache.close()  # the wheel was unpacked from memory; close waits for its write to the cache
        assert (tmp_path / "cache" / "blobs" / sha(wheel)).read_bytes() == wheel

    asyncio.run(main())
    assert sorted(source.calls) == sorted([sha(script), sha(wheel)])

    # A second cache on the same directory finds everything on disk.
    again = CountingSource(blobs)
    again.go.set()
    asyncio.run(ArtifactCache(tmp_path / "cache", again).environment(sha(script), [sha(wheel)]))
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


# -- nothing on disk is trusted: verification and repair -------------------------------

SCRIPT = b"from greet import hello\n\ndef process(job_input, ctx):\n    return hello(job_input)\n"


class RecordingSource(DirectorySource):
    """Blobs from a directory, recording what was fetched; fails on demand after one chunk."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, chunk_size=7)
        self.calls: list[str] = []
        self.broken = False

    async def chunks(self, sha256: str) -> AsyncIterator[bytes]:
        self.calls.append(sha256)
        async for chunk in super().chunks(sha256):
            yield chunk
            if self.broken:
                raise ArtifactError(f"cannot fetch {sha256[:12]} from the server: UNAVAILABLE")


@dataclasses.dataclass
class Populated:
    """A cache dir a worker process filled; each ``restart`` is a new worker process on it."""

    tmp_path: Path
    script: bytes = SCRIPT
    wheel: bytes = b""

    def __post_init__(self) -> None:
        server = self.tmp_path / "server"
        server.mkdir()
        (server / sha(self.script)).write_bytes(self.script)
        self.wheel = make_wheel(self.tmp_path / "greet.whl", WHEEL_MEMBERS)
        (server / sha(self.wheel)).write_bytes(self.wheel)
        self.restart()[0].run(sha(self.script), [sha(self.wheel)])

    def restart(self, clock: ManualClock | None = None) -> tuple[Worker, RecordingSource]:
        source = RecordingSource(self.tmp_path / "server")
        monotonic = (clock or ManualClock()).monotonic
        return Worker(ArtifactCache(self.cache, source, monotonic=monotonic)), source

    @property
    def cache(self) -> Path:
        return self.tmp_path / "cache"

    @property
    def env(self) -> Path:
        return self.cache / "envs" / sha(self.wheel)

    @property
    def blob(self) -> Path:
        return self.cache / "blobs" / sha(self.wheel)

    @property
    def script_file(self) -> Path:
        return self.cache / "scripts" / f"{sha(self.script)}.py"

    def use(self, worker: Worker) -> Environment:
        return worker.run(sha(self.script), [sha(self.wheel)])

    def hot(self, worker: Worker) -> Environment | None:
        return worker.cache.cached_environment(sha(self.script), [sha(self.wheel)])


@dataclasses.dataclass
class Worker:
    cache: ArtifactCache

    def run(self, script: str, wheels: list[str]) -> Environment:
        async def use() -> Environment:
            environment = await self.cache.environment(script, wheels)
            await self.cache.close()
            return environment

        return asyncio.run(use())


@pytest.fixture
def populated(tmp_path: Path) -> Populated:
    return Populated(tmp_path)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def damage(path: Path, old: str, new: str) -> None:
    """Change the file's text and put its mtime back, as bit rot would (stat alone misses it)."""
    st = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("unpacked", [True, False], ids=["unpacked", "not-unpacked-yet"])
def test_a_corrupted_cached_wheel_is_fetched_again(
    populated: Populated, caplog: pytest.LogCaptureFixture, unpacked: bool
) -> None:
    populated.blob.write_bytes(populated.wheel[: len(populated.wheel) // 2])  # not a zip any more
    if not unpacked:  # as seen in the field: every job failed with BadZipFile
        shutil.rmtree(populated.env)
    worker, source = populated.restart()
    env = populated.use(worker)
    assert source.calls == [sha(populated.wheel)]
    assert populated.blob.read_bytes() == populated.wheel
    assert (env.wheel_dirs[0] / "greet" / "__init__.py").read_text() == WHEEL_MEMBERS["greet/__init__.py"]
    [warning] = warnings_in(caplog)
    assert f"cached wheel {sha(populated.wheel)[:12]} failed verification" in warning
    assert "fetching it again" in warning


def test_a_modified_unpacked_module_is_unpacked_again_when_a_worker_starts(
    populated: Populated, caplog: pytest.LogCaptureFixture
) -> None:
    module = populated.env / "greet" / "__init__.py"
    damage(module, "hello {name}", "HELLO {name}")  # same size, same mtime
    worker, source = populated.restart()
    env = populated.use(worker)
    assert module.read_text() == WHEEL_MEMBERS["greet/__init__.py"]
    assert source.calls == []  # the verified wheel on disk was enough
    assert env.wheels_generation == 1 and env.script_generation == 0
    [warning] = warnings_in(caplog)
    assert warning == (
        f"unpacked wheel {sha(populated.wheel)[:12]} was damaged (greet/__init__.py was modified): unpacked it again"
    )
    assert [p.name for p in populated.env.parent.iterdir()] == [populated.env.name]  # nothing set aside is left


def test_a_module_modified_under_a_running_worker_is_found_by_its_stat_and_unpacked_again(
    populated: Populated, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    worker, _ = populated.restart(clock)
    before = populated.use(worker)
    module = populated.env / "extra_mod.py"
    module.write_text("VALUE = 43\n")
    assert populated.hot(worker) is before  # not due for a look yet
    clock.advance(RECHECK_SECONDS)
    assert populated.hot(worker) is None  # its stat changed: back through the full checks
    after = populated.use(worker)
    assert module.read_text() == "VALUE = 42\n"
    assert after.wheels_key != before.wheels_key  # new children: the old ones may have loaded VALUE = 43
    assert "extra_mod.py was modified" in warnings_in(caplog)[0]


@pytest.mark.parametrize("name", ["json.py", "greet/sneaky.py", "greet/native.so", "evil/__init__.pyc"])
def test_an_injected_importable_file_is_found_and_removed(
    populated: Populated, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    injected = populated.env / name
    injected.parent.mkdir(exist_ok=True)
    injected.write_text("import os\n")  # json.py would shadow the stdlib: the env comes first on sys.path
    worker, _ = populated.restart()
    populated.use(worker)
    assert not injected.exists()
    assert f"({name} is not in the wheel)" in warnings_in(caplog)[0]


def test_bytecode_caches_and_other_stray_files_are_not_damage(
    populated: Populated, caplog: pytest.LogCaptureFixture
) -> None:
    pyc = populated.env / "greet" / "__pycache__" / "__init__.cpython-311.pyc"
    pyc.parent.mkdir()
    pyc.write_bytes(b"bytecode")
    (populated.env / "greet" / "notes.txt").write_text("left by someone\n")
    worker, source = populated.restart()
    env = populated.use(worker)
    assert (
        env.script_generation == env.wheels_generation == 0
        and pyc.exists()
        and warnings_in(caplog) == []
        and source.calls == []
    )


def test_a_modified_cached_script_is_fetched_again(populated: Populated, caplog: pytest.LogCaptureFixture) -> None:
    damage(populated.script_file, "hello(job_input)", "hello(job_inpuT)")
    worker, source = populated.restart()
    env = populated.use(worker)
    assert source.calls == [sha(populated.script)]
    assert env.script_path.read_bytes() == populated.script
    assert env.script_generation == 1 and env.wheels_generation == 0
    [warning] = warnings_in(caplog)
    assert f"cached job script {sha(populated.script)[:12]} failed verification" in warning


def test_a_script_modified_under_a_running_worker_is_fetched_again(populated: Populated) -> None:
    clock = ManualClock()
    worker, source = populated.restart(clock)
    before = populated.use(worker)
    populated.script_file.write_bytes(populated.script + b"# edited\n")
    clock.advance(RECHECK_SECONDS)
    assert populated.hot(worker) is None
    after = populated.use(worker)
    assert source.calls == [sha(populated.script)]
    assert after.script_path.read_bytes() == populated.script
    assert after.script_generation != before.script_generation  # children that loaded the edit load it again


def test_an_intact_cache_is_verified_once_per_process_not_per_use(populated: Populated) -> None:
    clock = ManualClock()
    worker, source = populated.restart(clock)
    env = populated.use(worker)
    assert worker.cache.full_checks == 3  # the script, the wheel, the unpacked tree: once each
    for _ in range(20):
        assert populated.hot(worker) is env  # between looks: not even a stat
    assert worker.cache.quick_checks == 0
    for _ in range(20):
        clock.advance(RECHECK_SECONDS)
        assert populated.hot(worker) is env
        assert populated.use(worker) is env
    assert worker.cache.quick_checks == 20  # a stat signature each time it was due
    assert worker.cache.full_checks == 3
    assert source.calls == []


def test_a_failed_refetch_leaves_neither_the_damaged_nor_a_partial_file(populated: Populated) -> None:
    populated.script_file.write_text("damaged\n")
    worker, source = populated.restart()
    source.broken = True
    with pytest.raises(ArtifactError, match="UNAVAILABLE"):
        populated.use(worker)
    assert list(populated.script_file.parent.iterdir()) == []
    source.broken = False  # the server is back: the next job gets the right script
    assert populated.use(worker).script_path.read_bytes() == populated.script
