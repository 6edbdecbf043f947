"""Wheels: validate an upload, read its name, version and handlers without importing it."""

from __future__ import annotations

import configparser
import dataclasses
import email.parser
import io
import re
import stat
import zipfile

from netdist.errors import WheelError

MAX_WHEEL_BYTES = 256 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 20_000
ENTRY_POINT_GROUP = "netdist.handlers"
_FILENAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WheelInfo:
    filename: str
    sha256: str
    size: int
    distribution: str
    version: str
    handlers: dict[str, str]  # handler name -> "module:attr"

    def to_json_dict(self) -> dict[str, object]:
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "distribution": self.distribution,
            "version": self.version,
        }


def inspect_wheel(filename: str, data: bytes, sha256: str) -> WheelInfo:
    """Check that ``data`` is a safe wheel and read its metadata."""
    if not _FILENAME.match(filename):
        raise WheelError(f"{filename!r}: not a wheel file name (name-version-python-abi-platform.whl)")
    if len(data) > MAX_WHEEL_BYTES:
        raise WheelError(f"{filename}: {len(data)} bytes is over the {MAX_WHEEL_BYTES} byte limit")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WheelError(f"{filename}: not a valid zip archive ({exc})") from None
    if bad is not None:
        raise WheelError(f"{filename}: member {bad!r} fails its CRC check")
    with zf:
        infos = zf.infolist()
        _check_members(filename, infos)
        dist_info = _dist_info_dir(filename, infos)
        meta = email.parser.Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode("utf-8", "replace"))
        name, version = meta.get("Name"), meta.get("Version")
        if not name or not version:
            raise WheelError(f"{filename}: {dist_info}/METADATA lacks Name or Version")
        handlers = _entry_points(zf, f"{dist_info}/entry_points.txt")
    return WheelInfo(
        filename=filename, sha256=sha256, size=len(data),
        distribution=name, version=version, handlers=handlers,
    )


def _check_members(filename: str, infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MEMBERS:
        raise WheelError(f"{filename}: {len(infos)} members is over the {MAX_MEMBERS} limit")
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise WheelError(f"{filename}: unsafe member path {name!r} (absolute or '..')")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise WheelError(f"{filename}: member {name!r} is a symbolic link")
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise WheelError(f"{filename}: unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} limit")


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
    try:
        text = zf.read(path).decode("utf-8")
    except KeyError:
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
