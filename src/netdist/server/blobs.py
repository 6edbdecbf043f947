"""Content-addressed files under the data dir: wheels and job scripts.

Every file is written to a temporary name (``.tmp-*``) and renamed into
place; a write that fails leaves no temporary file behind, and a full disk
(ENOSPC, EDQUOT) is refused with DiskFullError naming the data dir. A blob
arriving over the network (:class:`IncomingBlob`) is written as its chunks
come and hashed as it is written, so no upload is ever held in memory.
Temporary files left by a crash are removed when the store opens.

``max_store_bytes`` caps the bytes under ``blobs/``: uploads reserve what
their headers declare, and a new blob that would pass the cap is refused
with ResourceExhaustedError naming the cap and the use.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

from netdist.errors import (
    DiskFullError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from netdist.removal import remove
from netdist.ziplimit import ZipLimits, extract, safe_member_path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FULL = (errno.ENOSPC, errno.EDQUOT)
TEMP_PREFIX = ".tmp-"


class BlobStore:
    def __init__(self, root: Path, *, max_store_bytes: int | None = None, limits: ZipLimits | None = None) -> None:
        self.root = root
        self.max_store_bytes = max_store_bytes
        self.limits = limits or ZipLimits()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "envs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._reserved = 0
        self.used_bytes = self._open_store()

    def _open_store(self) -> int:
        """Remove what interrupted writes left; the bytes the blobs take."""
        used = 0
        for place in (self.root / "blobs", self.root / "envs"):
            for entry in place.iterdir():
                if entry.name.startswith(TEMP_PREFIX):
                    remove(entry)
        for sub in (self.root / "blobs").iterdir():
            if not sub.is_dir():
                continue
            for entry in sub.iterdir():
                if entry.name.startswith(TEMP_PREFIX):
                    remove(entry)
                elif entry.is_file():
                    used += entry.stat().st_size
        return used

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidArgumentError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / "blobs" / sha256[:2] / sha256

    # -- the store's size ------------------------------------------------------------

    def reserve(self, nbytes: int) -> None:
        """Hold ``nbytes`` for a blob on its way in; refuse if the store would pass its cap."""
        with self._lock:
            self._check_room(nbytes)
            self._reserved += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes

    def _check_room(self, nbytes: int) -> None:
        cap = self.max_store_bytes
        if cap is not None and self.used_bytes + self._reserved + nbytes > cap:
            raise ResourceExhaustedError(
                f"the blob store is full: {self.used_bytes} bytes in use and {self._reserved} held for uploads "
                f"in progress, {nbytes} more would pass its limit of {cap} bytes (--max-store-bytes)"
            )

    # -- writing ------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        with self._lock:
            self._check_room(len(data))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
        except OSError as exc:
            self._refuse_if_full(exc)
            raise
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._move_in(Path(tmp), target, len(data))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._refuse_if_full(exc)
            raise
        return sha

    def incoming(self) -> IncomingBlob:
        """A temporary file for a blob that arrives in chunks."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=f"{TEMP_PREFIX}upload-")
        except OSError as exc:
            self._refuse_if_full(exc)
            raise
        return IncomingBlob(self.root, fd, Path(tmp))

    def adopt(self, blob: IncomingBlob) -> str:
        """Move a finished incoming blob to its place by hash (dropped if that blob is there already)."""
        sha = blob.sha256
        target = self.path(sha)
        if target.exists():
            blob.discard()
            return sha
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._move_in(blob.path, target, blob.size)
        except OSError as exc:
            blob.discard()
            self._refuse_if_full(exc)
            raise
        blob.done = True  # its temporary name is gone; discard() does nothing now
        return sha

    def _move_in(self, tmp: Path, target: Path, size: int) -> None:
        with self._lock:
            existed = target.exists()
            os.replace(tmp, target)
            if not existed:
                self.used_bytes += size

    # -- reading ------------------------------------------------------------------------

    def open(self, sha256: str) -> Path:
        target = self.path(sha256)
        if not target.exists():
            raise NotFoundError(f"no blob with sha256 {sha256}")
        return target

    def unpacked(self, sha256: str) -> Path:
        """The wheel ``sha256`` unpacked (once) for the handler hosts, within the store's zip limits."""
        target = self.root / "envs" / sha256
        if target.exists():
            return target
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.root / "envs", prefix=TEMP_PREFIX))
        except OSError as exc:
            self._refuse_if_full(exc)
            raise
        try:
            with zipfile.ZipFile(self.open(sha256)) as zf:
                extract(zf, tmp, self.limits, name=f"wheel {sha256[:12]}", target=safe_member_path)
            os.replace(tmp, target)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if target.exists() and isinstance(exc, OSError):
                return target  # another call unpacked it first
            self._refuse_if_full(exc)
            raise
        return target

    def _refuse_if_full(self, exc: BaseException) -> None:
        refuse_if_full(self.root, exc)


class IncomingBlob:
    """A blob being received: a temporary file under ``blobs/``, hashed as it is written.

    :meth:`write` runs in a worker thread; :meth:`discard` may come from the
    event loop at any time (a refused upload, a client gone) and waits for a
    write under way, so the file is never written after it is removed.
    """

    def __init__(self, root: Path, fd: int, path: Path) -> None:
        self._root = root
        self.path = path
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._lock = threading.Lock()
        self.done = False
        self.size = 0
        self.sha256 = ""

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.done:
                return
            try:
                self._file.write(data)
            except OSError as exc:
                refuse_if_full(self._root, exc)
                raise
            self._digest.update(data)
            self.size += len(data)

    def finish(self) -> str:
        """Flush the file to disk; its sha256."""
        with self._lock:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                refuse_if_full(self._root, exc)
                raise
            self._file.close()
            self.sha256 = self._digest.hexdigest()
            return self.sha256

    def discard(self) -> None:
        """Close and remove the temporary file (again: no effect)."""
        with self._lock:
            self.done = True
            with contextlib.suppress(OSError):
                self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def refuse_if_full(root: Path, exc: BaseException) -> None:
    """A full disk becomes the operator's error; any other error is raised as it is."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        raise DiskFullError(
            f"the disk holding the data dir {root.resolve()} is full: {exc.strerror}; free space there and try again"
        ) from exc
