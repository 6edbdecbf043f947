"""What the worker's cache checks: a wheel unpacked safely, and a file or an unpacked tree against its hashes.

A wheel is unpacked (or hashed member by member) only if its zip directory
declares no more than the limit, and the unpack counts what it writes
(:mod:`netdist.ziplimit`); no member may leave the tree. An unpacked tree is
verified against the (verified) wheel: every file it put there by its sha256,
and no other importable file nor symlink. A stat signature (size, mtime,
ctime, inode and mode of every file) stands in for the hashes afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from importlib.machinery import all_suffixes
from pathlib import Path, PurePosixPath

from netdist.errors import ArtifactError, UnpackLimitError, WheelError
from netdist.worker.blob_source import short
from netdist.worker.held_blob import HeldBlob
from netdist.ziplimit import ZipLimits, check_directory, extract

_HASH_CHUNK = 1 << 20
_IMPORTABLE = tuple(all_suffixes())
WORKER_ZIP_LIMITS = ZipLimits(max_ratio=None)
"""A wheel's unpacked size is capped (the worker's disk); its ratio was judged by the server at upload."""

Wheel = Path | HeldBlob
"""A verified wheel: its file in the cache, or its bytes still in memory."""
Signature = tuple[tuple[str, int, int, int, int, int], ...]
"""Per file: relative path, size, mtime_ns, ctime_ns, inode, mode; sorted."""


def _member_target(name: str) -> PurePosixPath | None:
    """Where a wheel member goes in the unpacked tree; None to skip it."""
    if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise ArtifactError(f"wheel member {name!r} has an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise ArtifactError(f"wheel member {name!r} leaves the wheel's directory")
    parts = path.parts
    if len(parts) >= 2 and parts[0].endswith(".data"):
        if parts[1] in ("purelib", "platlib") and len(parts) > 2:
            return PurePosixPath(*parts[2:])
        return None  # scripts, headers, data: not for sys.path
    return path


def unpack_wheel(wheel: Wheel, dest: Path, *, replace: bool = False, limits: ZipLimits = WORKER_ZIP_LIMITS) -> Path:
    """Unpack ``wheel`` into ``dest`` (atomic: a temp dir then os.replace).

    Idempotent unless ``replace``: then a tree already at ``dest`` is moved
    aside and removed once the fresh one is in its place.
    """
    if dest.is_dir() and not replace:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
    try:
        with _open_wheel(wheel, limits) as archive:
            try:  # counted: stops past a member's declared size or the limit, whatever the directory says
                extract(archive, tmp, limits, name=f"wheel {short(wheel.name)}", target=_member_target)
            except (UnpackLimitError, WheelError) as exc:
                raise ArtifactError(exc.message) from None
        _put_tree(tmp, dest, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _open_wheel(wheel: Wheel, limits: ZipLimits) -> zipfile.ZipFile:
    """The wheel's zip, its directory checked against ``limits`` before anything is inflated."""
    try:
        archive = zipfile.ZipFile(wheel.reader() if isinstance(wheel, HeldBlob) else wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"wheel {short(wheel.name)} is not a zip file: {exc}") from None
    size = wheel.size if isinstance(wheel, HeldBlob) else wheel.stat().st_size
    try:
        check_directory(f"wheel {short(wheel.name)}", archive.infolist(), size, limits)
    except (UnpackLimitError, WheelError) as exc:
        archive.close()
        raise ArtifactError(exc.message) from None
    return archive


def _put_tree(tmp: Path, dest: Path, *, replace: bool) -> None:
    """Move the finished tree ``tmp`` to ``dest``; another process's copy there is as good."""
    aside: Path | None = None
    try:
        if replace and dest.exists():
            aside = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".damaged-"))
            with contextlib.suppress(FileNotFoundError):  # another process moved it
                os.replace(dest, aside / "tree")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another worker process won the race: fine
                raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_manifest(wheel: Wheel, limits: ZipLimits = WORKER_ZIP_LIMITS) -> dict[str, str]:
    """What unpacking ``wheel`` puts on disk: relative path -> sha256 of its bytes."""
    manifest: dict[str, str] = {}
    with _open_wheel(wheel, limits) as archive:
        for info in archive.infolist():
            target = _member_target(info.filename)
            if target is None or info.is_dir():
                continue
            digest = hashlib.sha256()
            with archive.open(info) as src:
                while chunk := src.read(_HASH_CHUNK):
                    digest.update(chunk)
            manifest[target.as_posix()] = digest.hexdigest()
    return manifest


def _tree_entries(root: Path, prefix: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``root`` but directories and ``__pycache__``, with its relative path."""
    with os.scandir(root) as entries:
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    yield from _tree_entries(Path(entry.path), rel + "/")
            else:
                yield rel, entry


def file_signature(path: Path) -> Signature | None:
    """The stat signature of one file; None when it is not there."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return ((path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode),)


def tree_signature(root: Path) -> Signature | None:
    """The stat signature of an unpacked tree (``__pycache__`` aside); None when it is not there."""
    rows = []
    try:
        for rel, entry in _tree_entries(root):
            st = entry.stat(follow_symlinks=False)
            rows.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode))
    except OSError:
        return None
    rows.sort()
    return tuple(rows)


def tree_damage(root: Path, manifest: Mapping[str, str]) -> str | None:
    """What is wrong with the tree unpacked from a wheel of ``manifest``; None if nothing."""
    seen: set[str] = set()
    for rel, entry in _tree_entries(root):
        if entry.is_symlink():
            return f"{rel} is a symbolic link"
        expected = manifest.get(rel)
        if expected is None:
            if rel.endswith(_IMPORTABLE):
                return f"{rel} is not in the wheel"
            continue
        seen.add(rel)
        try:
            actual = file_sha256(Path(entry.path))
        except OSError as exc:
            return f"{rel} cannot be read: {exc.strerror or exc}"
        if actual != expected:
            return f"{rel} was modified"
    missing = sorted(set(manifest) - seen)
    return f"{missing[0]} is missing" if missing else None


def check_tree(wheel: Wheel, dest: Path, limits: ZipLimits = WORKER_ZIP_LIMITS) -> tuple[Signature, str | None]:
    """Verify ``dest`` against ``wheel``, unpacking it again if damaged or absent.

    Returns the tree's signature as it was verified (taken before hashing, so a
    change made meanwhile shows later) and what was damaged, if anything.
    """
    signature = tree_signature(dest)
    damage = None
    if signature is not None:
        damage = tree_damage(dest, wheel_manifest(wheel, limits))
        if damage is None:
            return signature, None
    elif dest.exists() or dest.is_symlink():
        damage = "it cannot be read"
    unpack_wheel(wheel, dest, replace=damage is not None, limits=limits)
    fresh = tree_signature(dest)
    if fresh is None:
        raise ArtifactError(f"unpacked wheel {dest.name[:12]} vanished from the cache")
    return fresh, damage
