"""The data dir's part of ``netdist-server check``: every blob named exists and hashes to its name,
every blob file hashes to its name, and no temporary file of an interrupted write is left."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, select

from netdist.server.blobs import TEMP_PREFIX
from netdist.server.check_findings import Kind, Problem
from netdist.server.store.schema import handlers, packages

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20


def referenced_blobs(conn: Connection) -> tuple[dict[str, str], list[Problem]]:
    """sha256 -> who names it (a package wheel or a job script), and unreadable package rows."""
    named: dict[str, str] = {}
    problems: list[Problem] = []
    for pid, name, version, wheel_json, deps_json in conn.execute(
        select(
            packages.c.id, packages.c.name, packages.c.version, packages.c.wheel_json, packages.c.dependencies_json
        ).order_by(packages.c.id)
    ):
        try:
            wheels = [json.loads(wheel_json), *json.loads(deps_json)]
            shas = [str(w["sha256"]) for w in wheels]
        except (ValueError, TypeError, KeyError):
            problems.append(
                Problem(
                    kind=Kind.PACKAGE_DATA,
                    message=(f"package {name} {version} (id {pid}): wheel_json or dependencies_json does not parse"),
                )
            )
            continue
        for sha in shas:
            named.setdefault(sha, f"a wheel of package {name} {version}")
    for hid, sha, lock_json in conn.execute(
        select(handlers.c.id, handlers.c.script_sha256, handlers.c.deps_lock_json).order_by(handlers.c.id)
    ):
        named.setdefault(sha, f"the job script of handler {hid}")
        with contextlib.suppress(ValueError, TypeError, KeyError):  # a lock is the server's own JSON
            for key, platform in json.loads(lock_json or "{}").get("platforms", {}).items():
                for wheel in platform["wheels"]:
                    named.setdefault(str(wheel["sha256"]), f"a wheel locked for handler {hid} on {key}")
    return named, problems


def check_blobs(conn: Connection, data_dir: Path) -> tuple[list[Problem], int]:
    """Every named blob exists; every blob file hashes to its name. Returns the problems and the files hashed."""
    named, problems = referenced_blobs(conn)
    root = data_dir / "blobs"
    hashed = 0
    for path in _blob_files(root):
        rel = _rel(path, data_dir)
        if not _SHA256.match(path.name) or path.parent.name != path.name[:2]:
            problems.append(
                Problem(
                    kind=Kind.BLOB_CORRUPT,
                    path=rel,
                    message="not a blob (its name is not the sha256 under its first two digits)",
                )
            )
            continue
        hashed += 1
        try:
            actual = _sha256_of(path)
        except OSError as exc:
            problems.append(Problem(kind=Kind.BLOB_CORRUPT, path=rel, message=f"cannot be read: {exc.strerror or exc}"))
            continue
        if actual != path.name:
            problems.append(Problem(kind=Kind.BLOB_CORRUPT, path=rel, message=f"its content hashes to {actual}"))
    for sha, owner in sorted(named.items()):
        path = root / sha[:2] / sha
        if not _SHA256.match(sha):
            problems.append(Problem(kind=Kind.PACKAGE_DATA, message=f"{owner} names {sha!r}, not a sha256"))
        elif not path.is_file():
            problems.append(Problem(kind=Kind.BLOB_MISSING, path=_rel(path, data_dir), message=f"{owner} is missing"))
    return problems, hashed


def check_partial_files(data_dir: Path) -> list[Problem]:
    """Temporary files (``.tmp-*``) of writes that never finished, where the server writes them."""
    places = [data_dir, data_dir / "envs", data_dir / "blobs"]
    blobs = data_dir / "blobs"
    if blobs.is_dir():
        places += sorted(p for p in blobs.iterdir() if p.is_dir() and not p.name.startswith(TEMP_PREFIX))
    problems = []
    for place in places:
        if not place.is_dir():
            continue
        for entry in sorted(place.iterdir()):
            if entry.name.startswith(TEMP_PREFIX):
                what = "directory" if entry.is_dir() else "file"
                problems.append(
                    Problem(
                        kind=Kind.PARTIAL_FILE,
                        path=_rel(entry, data_dir),
                        message=(f"temporary {what} of an interrupted write (or one in progress on a live server)"),
                    )
                )
    return problems


def _blob_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for sub in sorted(root.iterdir()):
        if sub.is_dir() and not sub.name.startswith(TEMP_PREFIX):
            yield from (p for p in sorted(sub.iterdir()) if p.is_file() and not p.name.startswith(TEMP_PREFIX))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _rel(path: Path, data_dir: Path) -> str:
    try:
        return path.relative_to(data_dir).as_posix()
    except ValueError:
        return str(path)
