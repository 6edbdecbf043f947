"""glibc takes the pinned mmap threshold (the server's upload memory bound depends on it)."""

from __future__ import annotations

import platform

import pytest

from netdist.server.allocator import pin_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_pinned_thresholds() -> None:
    assert pin_mmap_threshold() is True
