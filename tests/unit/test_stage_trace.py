"""Stage stamps (src/netdist/stage_trace.py) are written only when NETDIST_TRACE_STAGES=1."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = "from netdist.stage_trace import stamp; stamp('jobs-committed')"


def _stderr(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NETDIST_TRACE_STAGES"}
    if env_value is not None:
        env["NETDIST_TRACE_STAGES"] = env_value
    done = subprocess.run(
        [sys.executable, "-c", CODE], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_stamp_is_one_line_with_the_time_and_the_stage_when_on() -> None:
    parts = _stderr("1").split()
    assert len(parts) == 3 and parts[0] == "netdist-stage" and parts[2] == "jobs-committed"
    assert float(parts[1]) > 1.7e9  # Unix time


def test_nothing_is_written_when_off() -> None:
    assert _stderr(None) == ""
    assert _stderr("0") == ""
