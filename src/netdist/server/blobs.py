"""Content-addressed files under the data dir: wheels and job scripts.

Every file is written to a temporary name and renamed into place; a write
that fails leaves no temporary file behind, and a full disk (ENOSPC, EDQUOT)
is refused with DiskFullError naming the data dir.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from netdist.errors import DiskFullError, InvalidArgumentError, NotFoundError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FULL = (errno.ENOSPC, errno.EDQUOT)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "envs").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidArgumentError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "blobs" / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        except OSError as exc:
            self._refuse_if_full(exc)
            raise
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._refuse_if_full(exc)
            raise
        return sha

    def open(self, sha256: str) -> Path:
        target = self.path(sha256)
        if not target.exists():
            raise NotFoundError(f"no blob with sha256 {sha256}")
        return target

    def unpacked(self, sha256: str) -> Path:
        """The wheel ``sha256`` unpacked (once) for the handler hosts."""
        target = self.root / "envs" / sha256
        if target.exists():
            return target
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.root / "envs", prefix=".tmp-"))
        except OSError as exc:
            self._refuse_if_full(exc)
            raise
        try:
            with zipfile.ZipFile(self.open(sha256)) as zf:
                zf.extractall(tmp)  # members were checked at upload
            os.replace(tmp, target)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if target.exists() and isinstance(exc, OSError):
                return target  # another call unpacked it first
            self._refuse_if_full(exc)
            raise
        return target

    def _refuse_if_full(self, exc: BaseException) -> None:
        """A full disk becomes the operator's error; any other error is raised as it is."""
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise DiskFullError(
                f"the disk holding the data dir {self.root.resolve()} is full: {exc.strerror}; "
                "free space there and try again") from exc
