"""keep_freed_memory: on glibc, large buffers made and dropped in turn stop faulting their pages in anew."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from netdist.malloc_tuning import keep_freed_memory

# What a batch of 1 MiB results does on the server: a JSON line of ten, read in 64 KiB pieces into a
# growing buffer, parsed again; thirty times over, then the page faults of thirty more are counted.
_PATTERN = """
import json, resource, sys
from netdist.malloc_tuning import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def batches():
    for _ in range(30):
        line = json.dumps({"items": [("x" * (1 << 20))] * 10}).encode()
        buf = bytearray()
        for at in range(0, len(line), 65536):
            buf.extend(line[at : at + 65536])
        json.loads(bytes(buf))
batches()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batches()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")


def _faults(mode: str) -> int:
    """Page faults of the pattern in a process of its own (so this one's malloc is left as it is), with
    none of glibc's MALLOC_* variables: the default must be glibc's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _PATTERN, mode], check=False, capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@glibc_only
def test_large_buffers_in_turn_fault_far_fewer_pages() -> None:
    """The tuned process asserts that glibc took the setting, then faults under half the pages."""
    default, tuned = _faults("default"), _faults("tuned")
    assert tuned * 2 < default, (default, tuned)


def test_elsewhere_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert keep_freed_memory() is False
