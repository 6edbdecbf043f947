"""Wheel validation: safe, valid, and read without importing anything."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

import pytest

from netdist.errors import WheelError
from netdist.server.wheels import inspect_wheel
from netdist.testing import write_wheel

NAME = "demo_pkg-1.0-py3-none-any.whl"


def inspect(data: bytes, filename: str = NAME):  # type: ignore[no-untyped-def]
    return inspect_wheel(filename, data, hashlib.sha256(data).hexdigest())


def zip_bytes(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


META = {"demo_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n"}


def test_reads_name_version_and_handlers_without_importing(tmp_path: Path) -> None:
    wheel = write_wheel(
        tmp_path,
        name="demo-pkg",
        version="1.0",
        files={"demo/__init__.py": "raise SystemExit('imported!')\n"},
        entry_points={"netdist.handlers": {"Calc": "demo.calc:Calculator"}, "console_scripts": {"x": "demo:x"}},
    )
    info = inspect(wheel.read_bytes(), wheel.name)
    assert (info.distribution, info.version) == ("demo-pkg", "1.0")
    assert info.handlers == {"Calc": "demo.calc:Calculator"}
    assert info.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_a_dependency_wheel_may_have_no_handlers(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, name="dep", version="2.0", files={"dep/__init__.py": ""})
    assert inspect(wheel.read_bytes(), wheel.name).handlers == {}


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"not a zip at all", NAME, "not a valid zip archive"),
        (zip_bytes(META), "demo.zip", "not a wheel file name"),
        (zip_bytes({**META, "../evil.py": b""}), NAME, "unsafe member path '../evil.py'"),
        (zip_bytes({**META, "/abs/evil.py": b""}), NAME, "unsafe member path '/abs/evil.py'"),
        (zip_bytes({**META, "a/../../evil.py": b""}), NAME, "unsafe member path"),
        (zip_bytes(META, link="demo/link"), NAME, "is a symbolic link"),
        (zip_bytes({"demo/__init__.py": b""}), NAME, "expected exactly one *.dist-info directory"),
        (zip_bytes({"x.dist-info/METADATA": b"Name: x\n"}), NAME, "lacks Name or Version"),
        (
            zip_bytes({**META, "demo_pkg-1.0.dist-info/entry_points.txt": b"[netdist.handlers\nx"}),
            NAME,
            "cannot parse entry points",
        ),
    ],
)
def test_bad_wheels_are_refused_with_the_reason(data: bytes, filename: str, message: str) -> None:
    with pytest.raises(WheelError) as err:
        inspect(data, filename)
    assert message in str(err.value)


def test_corrupted_member_fails_its_crc() -> None:
    data = bytearray(zip_bytes({**META, "demo/a.py": b"x = 1\n" * 50}))
    at = bytes(data).index(b"x = 1")
    data[at] = ord("y")
    with pytest.raises(WheelError, match=r"CRC|not a valid zip"):
        inspect(bytes(data))
