"""A server whose wall clock the test sets: libfaketime preloaded, its offset read from a file the
test rewrites (FAKETIME_TIMESTAMP_FILE, read again every second); the monotonic clock stays real
(FAKETIME_DONT_FAKE_MONOTONIC). Workers and the server's handler hosts run on the real clock
(faketime/sitecustomize.py). CI installs libfaketime (`apt-get install faketime`, .ci/run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LIBFAKETIME = next(
    (
        p
        for pattern in ("/usr/lib/*/faketime/libfaketimeMT.so.1", "/usr/*lib*/faketime/libfaketimeMT.so.1")
        for p in sorted(Path("/").glob(pattern.lstrip("/")))
    ),
    None,
)
SHIM = Path(__file__).parent / "faketime"  # its sitecustomize.py works around a libfaketime bug


def faketime_env(offset_file: Path, *, offset_seconds: int = 0) -> dict[str, str]:
    """The environment of a server whose wall clock runs ``offset_seconds`` ahead (behind, if
    negative), as long as ``offset_file`` says so: write ``+N`` or ``-N`` (seconds) to it to set it."""
    if LIBFAKETIME is None:
        if os.environ.get("CI"):
            raise RuntimeError("libfaketimeMT.so.1 is missing: CI installs faketime (.ci/run)")
        pytest.skip("libfaketime is not installed (apt-get install faketime); CI never skips")
    offset_file.write_text(f"{offset_seconds:+d}\n")
    python_path = [str(SHIM), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_CACHE_DURATION": "1",  # the file is read again at most every second
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DISABLE_SHM": "1",  # nothing left in /dev/shm by a killed process
        "NO_FAKE_STAT": "1",
        "PYTHONPATH": os.pathsep.join(python_path),  # the sitecustomize next to this file
    }
