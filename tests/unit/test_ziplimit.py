"""Zip bombs are refused by their directory before a byte is inflated; unpacking counts what it writes."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from netdist.errors import ArtifactError, UnpackLimitError, WheelError
from netdist.server.blobs import BlobStore
from netdist.server.wheels import inspect_wheel
from netdist.worker.integrity import unpack_wheel
from netdist.ziplimit import (
    RATIO_FLOOR_BYTES,
    UnpackBudget,
    ZipLimits,
    check_directory,
    copy_member,
    extract,
)
from tests.unit.test_wheels import META, NAME

MIB = 1024 * 1024


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def infos(data: bytes) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.infolist()


def member(name: str, *, size: int, packed: int, method: int = zipfile.ZIP_DEFLATED, flags: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.file_size, info.compress_size, info.compress_type, info.flag_bits = size, packed, method, flags
    return info


def lie_about_size(data: bytes, name: str, declared: int) -> bytes:
    """The zip with ``name``'s unpacked size in the central directory replaced by ``declared``."""
    out = bytearray(data)
    at = out.index(b"PK\x01\x02")  # the first central directory entry
    while True:
        name_len = struct.unpack_from("<H", out, at + 28)[0]
        if out[at + 46 : at + 46 + name_len].decode() == name:
            struct.pack_into("<I", out, at + 24, declared)
            return bytes(out)
        at = out.index(b"PK\x01\x02", at + 4)


def test_a_wheel_of_zeros_is_refused_for_its_ratio_before_unpacking(tmp_path: Path) -> None:
    bomb = zip_of({**META, "demo/zeros.bin": bytes(64 * MIB)})
    assert len(bomb) < 100_000  # 64 MiB declared in about 64 KB
    with pytest.raises(UnpackLimitError) as err:
        inspect_wheel(NAME, bomb, hashlib.sha256(bomb).hexdigest())
    assert "member 'demo/zeros.bin': unpacks" in err.value.message
    assert "over the limit of 100 to 1 (--max-compression-ratio)" in err.value.message


def test_many_small_compressible_members_are_refused_by_the_overall_ratio() -> None:
    many = {f"demo/m{i}.txt": bytes(RATIO_FLOOR_BYTES // 2) for i in range(8)}  # each exempt, 4 MiB together
    with pytest.raises(UnpackLimitError) as err:
        check_directory(NAME, infos(zip_of(many)), 10 * MIB, ZipLimits())
    assert err.value.message.startswith(f"{NAME}: unpacks ") and "to 1" in err.value.message


def test_small_and_ordinary_archives_pass() -> None:
    ordinary = zip_of({"demo/a.py": b"x = 1\n" * 1000, "demo/r.bin": os.urandom(2 * MIB)})
    assert check_directory(NAME, infos(ordinary), len(ordinary), ZipLimits()) == 6000 + 2 * MIB


@pytest.mark.parametrize(
    ("members", "limits", "message"),
    [
        (
            [member("a", size=600, packed=600, method=zipfile.ZIP_STORED)] * 2,
            ZipLimits(max_unpacked_bytes=1000),
            "unpacks to 1200 bytes, over the limit of 1000 (--max-unpacked-bytes)",
        ),
        ([member("a", size=1, packed=1)] * 4, ZipLimits(max_members=3), "4 members is over the limit of 3"),
        (
            [member("a", size=4 * MIB, packed=40_000)] * 3,
            ZipLimits(max_ratio=None),
            "declare 120000 compressed bytes in a 50000 byte archive: they overlap",
        ),
    ],
    ids=["total", "members", "overlap"],
)
def test_directory_limits(members: list[zipfile.ZipInfo], limits: ZipLimits, message: str) -> None:
    with pytest.raises(UnpackLimitError) as err:
        check_directory(NAME, members, 50_000, limits)
    assert message in err.value.message


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (member("a", size=10, packed=10, flags=0x1), "member 'a' is encrypted"),
        (member("a", size=10, packed=10, method=9), "uses compression method 9; allowed: stored, deflate"),
        (member("a", size=10_000, packed=10, method=zipfile.ZIP_STORED), "is stored uncompressed but declares"),
    ],
    ids=["encrypted", "deflate64", "stored-lie"],
)
def test_members_zipfile_cannot_read_safely_are_refused(info: zipfile.ZipInfo, message: str) -> None:
    with pytest.raises(WheelError) as err:
        check_directory(NAME, [info], 50_000, ZipLimits())
    assert message in err.value.message


def test_an_unpack_stops_at_a_lying_directory(tmp_path: Path) -> None:
    honest = zip_of({"demo/big.bin": bytes(8 * MIB)})
    liar = lie_about_size(honest, "demo/big.bin", 100)
    with zipfile.ZipFile(io.BytesIO(liar)) as zf, pytest.raises(WheelError, match="is damaged"):
        extract(zf, tmp_path, ZipLimits(), name="liar", target=PurePosixPath)
    assert (tmp_path / "demo" / "big.bin").stat().st_size <= 100


def test_the_budget_stops_an_unpack_past_its_limit() -> None:
    with zipfile.ZipFile(io.BytesIO(zip_of({"a": b"x" * 5000}))) as zf:
        out = io.BytesIO()
        with pytest.raises(UnpackLimitError, match="unpacks past the limit of 1000 bytes"):
            copy_member(zf, zf.getinfo("a"), out, UnpackBudget("w", 1000))
    assert len(out.getvalue()) <= 1 << 20  # stopped at the first chunk past it, nothing more


def test_the_server_unpack_of_a_forged_blob_stops_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, limits=ZipLimits(max_unpacked_bytes=MIB))
    sha = store.put(zip_of({"demo/big.bin": os.urandom(2 * MIB)}))  # never went through an upload
    with pytest.raises(UnpackLimitError, match="over the limit of 1048576"):
        store.unpacked(sha)
    assert list((tmp_path / "envs").iterdir()) == []


def test_the_worker_unpack_is_bounded_too(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(zip_of({"demo/big.bin": bytes(3 * MIB)}))
    with pytest.raises(ArtifactError, match="over the limit of 2097152"):
        unpack_wheel(wheel, tmp_path / "envs" / "x", limits=ZipLimits(max_unpacked_bytes=2 * MIB, max_ratio=None))
    assert list((tmp_path / "envs").iterdir()) == []
    liar = tmp_path / "liar.whl"
    liar.write_bytes(lie_about_size(wheel.read_bytes(), "demo/big.bin", 100))
    with pytest.raises(ArtifactError, match="is damaged"):
        unpack_wheel(liar, tmp_path / "envs" / "y")
    assert list((tmp_path / "envs").iterdir()) == []
