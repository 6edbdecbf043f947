"""`make demo` runs what these run: the demo cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netdist.demo", "--dir", str(tmp_path / "demo"), "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "primes below 1e6: 78498 primes below 1000000, largest 999983" in done.stdout
    assert "primes below 2e6, small chunks: 148933 primes below 2000000, largest 1999993" in done.stdout
    assert "every process stopped cleanly" in done.stdout
    demo = tmp_path / "demo"
    secrets = [
        p.read_text().strip()
        for p in [*(demo / "netdist-data").glob("*.token"), *(demo / "cache").glob("*/*.credential")]
    ]
    assert len(secrets) == 4  # the admin and worker tokens, each worker's credential
    texts = [done.stdout, done.stderr, *(p.read_text(errors="replace") for p in demo.rglob("*.log"))]
    assert not [s for s in secrets if any(s in text for text in texts)], "a token or credential was printed or logged"
