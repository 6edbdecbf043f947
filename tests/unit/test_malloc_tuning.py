"""keep_freed_memory: on glibc, large buffers made and dropped in turn stop faulting their pages in anew."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from netdist.malloc_tuning import keep_freed_memory

# Two ways large buffers come and go, each run twenty times, then the page faults of twenty more
# counted: the server's, a batch of ten 1 MiB results as a JSON line read in 64 KiB pieces into a
# growing buffer and parsed; the executor child's, a 10 MiB JSON text made and parsed.
_PATTERN = """
import json, resource, sys
from netdist.malloc_tuning import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def server():
    line = json.dumps({"items": [("x" * (1 << 20))] * 10}).encode()
    buf = bytearray()
    for at in range(0, len(line), 65536):
        buf.extend(line[at : at + 65536])
    json.loads(bytes(buf))
def child():
    json.loads(json.dumps({"items": ["x" * (1 << 20)] * 10}).encode())
pattern = {"server": server, "child": child}[sys.argv[2]]
for _ in range(20):
    pattern()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    pattern()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")


def _faults(mode: str, pattern: str) -> int:
    """Page faults of the pattern in a process of its own (so this one's malloc is left as it is), with
    none of glibc's MALLOC_* variables: the default must be glibc's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _PATTERN, mode, pattern],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@glibc_only
@pytest.mark.parametrize("pattern", ["server", "child"])
def test_large_buffers_in_turn_fault_far_fewer_pages(pattern: str) -> None:
    """The tuned process asserts that glibc took the settings, then faults under half the pages."""
    default, tuned = _faults("default", pattern), _faults("tuned", pattern)
    assert tuned * 2 < default, (default, tuned)


def test_elsewhere_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert keep_freed_memory() is False
