"""Removing what a path turned into: a file, a symlink or a directory tree; already gone is fine.

For the server's blob store (what interrupted writes left) and the worker's
cache (a damaged entry), which must not trip over what they clean up.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


def remove(path: Path) -> None:
    """Delete ``path``, whatever it is now: a tree (never through a symlink to one), a file, a link; or nothing."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
