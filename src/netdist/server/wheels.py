"""Wheels: validate an upload, read its name, version and handlers without importing it.

A wheel is judged by its zip directory first (:mod:`netdist.ziplimit`: sizes,
ratios, methods, member paths, links), and only then read: its CRCs checked,
its METADATA and entry points parsed. Names that reach logs and terminals (the
file name, the distribution's Name and Version, handler names) must be
printable. The file name's name and version must be the METADATA's (names
compared as PEP 503 normalizes them, versions as PEP 440 reads them): pip
refuses a wheel whose file name says otherwise, and so does the server.
"""

from __future__ import annotations

import configparser
import dataclasses
import email.parser
import io
import re
import stat
import zipfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from netdist.errors import WheelError
from netdist.fields import control_character
from netdist.ziplimit import ZipLimits, check_directory, safe_member_path

ENTRY_POINT_GROUP = "netdist.handlers"
MAX_FILENAME_CHARS = 255
MAX_NAME_CHARS = 200
MAX_TEXT_MEMBER_BYTES = 1024 * 1024
"""METADATA and entry_points.txt are read whole: at most this big."""
FILENAME = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-\d[A-Za-z0-9_.]*)?"
    r"-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+\.whl$"
)
"""name-version(-build)-python-abi-platform.whl, in the characters the wheel spec allows."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WheelInfo:
    filename: str
    sha256: str
    size: int
    distribution: str
    version: str
    handlers: dict[str, str]  # handler name -> "module:attr"
    requires: tuple[str, ...] = ()  # its METADATA's Requires-Dist, each a valid requirement

    def to_json_dict(self) -> dict[str, object]:
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "distribution": self.distribution,
            "version": self.version,
        }


def check_filename(filename: str) -> None:
    """Refuse a name that is not a wheel file name (checked on an upload's header, before its bytes)."""
    if len(filename) > MAX_FILENAME_CHARS or not FILENAME.match(filename):
        raise WheelError(
            f"{filename[:MAX_FILENAME_CHARS]!r}: not a wheel file name (name-version-python-abi-platform.whl)"
        )


def inspect_wheel(filename: str, wheel: bytes | Path, sha256: str, *, limits: ZipLimits | None = None) -> WheelInfo:
    """Check that ``wheel`` (its bytes, or its file) is a safe wheel within ``limits``; read its metadata."""
    check_filename(filename)
    limits = limits or ZipLimits()
    size = len(wheel) if isinstance(wheel, bytes) else wheel.stat().st_size
    try:
        zf = zipfile.ZipFile(io.BytesIO(wheel) if isinstance(wheel, bytes) else wheel)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WheelError(f"{filename}: not a valid zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        check_directory(filename, infos, size, limits)  # before a byte is inflated
        _check_members(filename, infos)
        try:
            bad = zf.testzip()  # inflates every member, each bounded by its checked declared size
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise WheelError(f"{filename}: not a valid zip archive ({exc})") from None
        if bad is not None:
            raise WheelError(f"{filename}: member {bad!r} fails its CRC check")
        dist_info = _dist_info_dir(filename, infos)
        meta = email.parser.Parser().parsestr(_read_text(zf, f"{dist_info}/METADATA") or "")
        name, version = meta.get("Name"), meta.get("Version")
        if not name or not version:
            raise WheelError(f"{filename}: {dist_info}/METADATA lacks Name or Version")
        _check_name(filename, "Name", name)
        _check_name(filename, "Version", version)
        check_filename_matches(filename, name, version)
        requires = _requires(filename, meta.get_all("Requires-Dist") or [])
        handlers = _entry_points(zf, f"{dist_info}/entry_points.txt")
    for handler in handlers:
        _check_name(filename, "handler name", handler)
    return WheelInfo(
        filename=filename,
        sha256=sha256,
        size=size,
        distribution=name,
        version=version,
        handlers=handlers,
        requires=requires,
    )


def check_filename_matches(filename: str, name: str, version: str) -> None:
    """WheelError unless the file name's name and version are the METADATA's ``name`` and ``version``."""
    found = FILENAME.match(filename)
    assert found is not None  # check_filename passed
    file_name, file_version = found["name"], found["version"]
    if canonicalize_name(file_name) != canonicalize_name(name) or not _same_version(file_version, version):
        raise WheelError(
            f"{filename}: its file name says {file_name} {file_version}, its METADATA says {name} {version}; "
            "pip refuses such a wheel too: rebuild it, or give the file its own name and version"
        )


def _same_version(file_version: str, version: str) -> bool:
    try:
        return Version(file_version) == Version(version)
    except InvalidVersion:
        return file_version.replace("-", "_") == version.replace("-", "_")


def _requires(filename: str, lines: list[str]) -> tuple[str, ...]:
    for line in lines:
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise WheelError(f"{filename}: its Requires-Dist {line[:100]!r} is not a requirement ({exc})") from None
    return tuple(line.strip() for line in lines)


def read_requires(filename: str, wheel: Path) -> tuple[str, ...]:
    """The Requires-Dist of a wheel checked before (one in the blob store); () when it has none."""
    with zipfile.ZipFile(wheel) as zf:
        dist_info = _dist_info_dir(filename, zf.infolist())
        meta = email.parser.Parser().parsestr(_read_text(zf, f"{dist_info}/METADATA") or "")
    return _requires(filename, meta.get_all("Requires-Dist") or [])


def _check_name(filename: str, what: str, value: str) -> None:
    if len(value) > MAX_NAME_CHARS:
        raise WheelError(f"{filename}: its {what} is {len(value)} characters, over the limit of {MAX_NAME_CHARS}")
    control = control_character(value)
    if control is not None:
        raise WheelError(f"{filename}: its {what} holds the control character {control}")


def _check_members(filename: str, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        try:
            safe_member_path(info.filename)
        except WheelError as exc:
            raise WheelError(f"{filename}: {exc.message}") from None
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise WheelError(f"{filename}: member {info.filename[:200]!r} is a symbolic link")


def _read_text(zf: zipfile.ZipFile, path: str) -> str | None:
    try:
        info = zf.getinfo(path)
    except KeyError:
        return None
    if info.file_size > MAX_TEXT_MEMBER_BYTES:
        raise WheelError(f"{path}: {info.file_size} bytes is over the limit of {MAX_TEXT_MEMBER_BYTES}")
    return zf.read(info).decode("utf-8", "replace")


def _dist_info_dir(filename: str, infos: list[zipfile.ZipInfo]) -> str:
    dirs = {
        i.filename.split("/")[0]
        for i in infos
        if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")
    }
    if len(dirs) != 1:
        raise WheelError(f"{filename}: expected exactly one *.dist-info directory with METADATA, found {len(dirs)}")
    return dirs.pop()


def _entry_points(zf: zipfile.ZipFile, path: str) -> dict[str, str]:
    text = _read_text(zf, path)
    if text is None:
        return {}
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise WheelError(f"{path}: cannot parse entry points ({exc})") from None
    if not parser.has_section(ENTRY_POINT_GROUP):
        return {}
    return {k.strip(): v.strip() for k, v in parser.items(ENTRY_POINT_GROUP)}
