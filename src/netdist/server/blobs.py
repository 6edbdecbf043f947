"""Content-addressed files under the data dir: wheels and job scripts."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from netdist.errors import InvalidArgumentError, NotFoundError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
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
        tmp = Path(tempfile.mkdtemp(dir=self.root / "envs", prefix=".tmp-"))
        try:
            with zipfile.ZipFile(self.open(sha256)) as zf:
                zf.extractall(tmp)  # members were checked at upload
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.exists():
                raise
        return target
