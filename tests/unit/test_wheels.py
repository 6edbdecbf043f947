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


def test_a_file_name_that_disagrees_with_metadata_is_refused_naming_both(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, name="netdist-example-primes", version="0.1.1", files={"primes/__init__.py": ""})
    renamed = "netdist_example_primes-0.2.0-py3-none-any.whl"  # the same bytes, a new name
    with pytest.raises(WheelError) as err:
        inspect(wheel.read_bytes(), renamed)
    assert err.value.code.name == "INVALID_ARGUMENT"
    assert "file name says netdist_example_primes 0.2.0" in err.value.message
    assert "METADATA says netdist-example-primes 0.1.1" in err.value.message
    with pytest.raises(WheelError, match=r"METADATA says netdist-example-primes 0\.1\.1"):
        inspect(wheel.read_bytes(), "other_package-0.1.1-py3-none-any.whl")


@pytest.mark.parametrize(
    ("filename", "name", "version"),
    [
        ("demo_pkg-1.0-py3-none-any.whl", "Demo.Pkg", "1.0"),  # PEP 503 names: case, dots, dashes
        ("demo_pkg-1.0.0-py3-none-any.whl", "demo-pkg", "1.0"),  # PEP 440 versions: 1.0.0 == 1.0
        ("demo_pkg-1.0rc1-1-py3-none-any.whl", "demo-pkg", "1.0-rc.1"),  # normalized, with a build tag
    ],
)
def test_a_file_name_that_agrees_with_metadata_once_normalized_is_taken(
    tmp_path: Path, filename: str, name: str, version: str
) -> None:
    data = write_wheel(tmp_path, name=name, version=version, files={"demo/__init__.py": ""}).read_bytes()
    info = inspect(data, filename)
    assert (info.distribution, info.version) == (name, version)


def test_requires_dist_is_read_and_checked(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, name="a", version="1", files={}, requires=["b>=2", 'c; sys_platform == "win32"'])
    assert inspect(wheel.read_bytes(), wheel.name).requires == ("b>=2", 'c; sys_platform == "win32"')
    bad = write_wheel(tmp_path / "bad", name="a", version="1", files={}, requires=["b >= = 2"])
    with pytest.raises(WheelError, match="Requires-Dist 'b >= = 2' is not a requirement"):
        inspect(bad.read_bytes(), bad.name)
