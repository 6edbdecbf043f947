"""Zip archives (wheels) within limits: judged by their directory before anything is unpacked.

A zip's central directory declares, for each member, its compression method,
its compressed size and its unpacked size. :func:`check_directory` refuses an
archive on that alone, before a byte is inflated: too many members, an
unpacked total past ``max_unpacked_bytes``, a compression ratio past
``max_ratio`` (the whole archive's, or one member's; archives and members
under :data:`RATIO_FLOOR_BYTES` unpacked are never refused for their ratio),
members that overlap (compressed sizes adding up to more than the archive),
encryption, or a method :mod:`zipfile` cannot read.

The directory may lie, so :func:`extract` does not trust it either: it
counts what it writes and stops the moment a member passes its declared size
or the archive passes ``max_unpacked_bytes``. (:mod:`zipfile` itself stops a
member at its declared size and then fails its CRC check.)

A 963 KB wheel of zeros declares 991 MB: a ratio of about 1000, refused.
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from netdist.errors import UnpackLimitError, WheelError

DEFAULT_MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_RATIO = 100.0
RATIO_FLOOR_BYTES = 1024 * 1024
DEFAULT_MAX_MEMBERS = 20_000
_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ZipLimits:
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_ratio: float | None = DEFAULT_MAX_RATIO
    """None: no ratio check (the worker's: the server checked the ratio at upload)."""
    max_members: int = DEFAULT_MAX_MEMBERS


def check_directory(name: str, infos: Sequence[zipfile.ZipInfo], archive_bytes: int, limits: ZipLimits) -> int:
    """Refuse an archive whose directory passes a limit; returns the unpacked total it declares."""
    if len(infos) > limits.max_members:
        raise UnpackLimitError(f"{name}: {len(infos)} members is over the limit of {limits.max_members}")
    total = packed = 0
    for info in infos:
        where = f"{name}: member {info.filename[:200]!r}"
        if info.flag_bits & 0x1:
            raise WheelError(f"{where} is encrypted")
        if info.compress_type not in _METHODS:
            raise WheelError(
                f"{where} uses compression method {info.compress_type}; allowed: {', '.join(_METHODS.values())}"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise WheelError(
                f"{where} is stored uncompressed but declares {info.compress_size} bytes "
                f"packed and {info.file_size} unpacked"
            )
        _check_ratio(where, info.file_size, info.compress_size, limits)
        total += info.file_size
        packed += info.compress_size
    if total > limits.max_unpacked_bytes:
        raise UnpackLimitError(
            f"{name}: unpacks to {total} bytes, over the limit of {limits.max_unpacked_bytes} (--max-unpacked-bytes)"
        )
    if packed > archive_bytes:
        raise UnpackLimitError(
            f"{name}: its members declare {packed} compressed bytes in a {archive_bytes} byte "
            "archive: they overlap (a zip bomb's trick)"
        )
    _check_ratio(name, total, packed, limits)
    return total


def _check_ratio(where: str, unpacked: int, packed: int, limits: ZipLimits) -> None:
    if limits.max_ratio is None or unpacked <= RATIO_FLOOR_BYTES:
        return
    if unpacked > limits.max_ratio * max(packed, 1):
        ratio = unpacked / max(packed, 1)
        raise UnpackLimitError(
            f"{where}: unpacks {packed} compressed bytes to {unpacked} (a ratio of {ratio:.0f} to 1), over the "
            f"limit of {limits.max_ratio:g} to 1 (--max-compression-ratio): a zip bomb, or data that should "
            "not ship in a wheel"
        )


class UnpackBudget:
    """What an extraction may still write; passing it stops the extraction."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.left = limit

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise UnpackLimitError(
                f"{self.name}: unpacks past the limit of {self.limit} bytes (more than its directory declares); stopped"
            )


def extract(
    archive: zipfile.ZipFile, dest: Path, limits: ZipLimits, *, name: str, target: Callable[[str], PurePosixPath | None]
) -> int:
    """Unpack ``archive`` under ``dest`` (checked first), counting; returns the bytes written.

    ``target`` maps a member name to its place under ``dest`` (None: skip it);
    it must refuse unsafe names. A partial tree is the caller's to remove.
    """
    infos = archive.infolist()
    size = archive.fp.seek(0, 2) if archive.fp is not None else 0
    check_directory(name, infos, size, limits)
    budget = UnpackBudget(name, limits.max_unpacked_bytes)
    for info in infos:
        rel = target(info.filename)
        if rel is None or info.is_dir():
            continue
        out = dest.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as stream:
            copy_member(archive, info, stream, budget)
    return budget.limit - budget.left


def copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO, budget: UnpackBudget) -> None:
    """Inflate one member into ``out``; stop past its declared size or past the budget."""
    written = 0
    try:
        with archive.open(info) as src:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise UnpackLimitError(
                        f"{budget.name}: member {info.filename[:200]!r} unpacks past the "
                        f"{info.file_size} bytes its directory declares; stopped"
                    )
                budget.take(len(chunk))
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # zipfile stops at the declared size: bad CRC
        raise WheelError(f"{budget.name}: member {info.filename[:200]!r} is damaged ({exc})") from None


def safe_member_path(name: str) -> PurePosixPath:
    """A member's relative path; refuse absolute ones, drive letters, backslashes and '..'."""
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise WheelError(f"unsafe member path {name[:200]!r} (absolute)")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise WheelError(f"unsafe member path {name[:200]!r} ('..')")
    return path
