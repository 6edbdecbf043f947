"""A child ends with its parent: the kernel's PDEATHSIG on Linux, a polling thread elsewhere."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from netdist.parent_death import (
    EXIT_CODE,
    PARENT_PID_FLAG,
    child_args,
    parent_pid_from,
)
from netdist.testing import wait_until
from tests.support import alive

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG is Linux")

# The parent starts the child from its main thread, waits until the child is
# armed, says so, then waits to be killed.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from netdist.parent_death import child_args
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *child_args()], stdout=subprocess.PIPE)
    print(child.pid, flush=True)
    assert child.stdout is not None
    print(child.stdout.readline().decode().strip(), flush=True)
    time.sleep(600)
""")

# Hangs in C code that never lets go of the GIL: no Python thread can run.
HOLDS_THE_GIL = textwrap.dedent("""
    import collections, itertools, sys
    from netdist.parent_death import exit_with_parent, parent_pid_from
    print(exit_with_parent(parent_pid_from(sys.argv[1:])), flush=True)
    collections.deque(itertools.repeat(None), maxlen=0)
""")

SLEEPS_WITH_THE_FALLBACK = textwrap.dedent("""
    import sys, time
    from netdist.parent_death import exit_with_parent, parent_pid_from
    print(exit_with_parent(parent_pid_from(sys.argv[1:]), prctl=False), flush=True)
    time.sleep(600)
""")


@contextlib.contextmanager
def parent_and_child(child_code: str) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    """A parent process with one child running ``child_code``: (parent, child pid, mechanism)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    child_pid = 0
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        mechanism = parent.stdout.readline().strip()
        yield parent, child_pid, mechanism
    finally:
        parent.kill()
        parent.wait()
        if child_pid and alive(child_pid):  # the test failed: leave nothing running
            os.kill(child_pid, signal.SIGKILL)


def test_parent_pid_is_read_from_the_arguments_its_parent_added() -> None:
    assert parent_pid_from(child_args()) == os.getpid()
    assert parent_pid_from(["x", PARENT_PID_FLAG, "123", "y"]) == 123
    assert parent_pid_from([PARENT_PID_FLAG, "nope"]) is None
    assert parent_pid_from([PARENT_PID_FLAG]) is None
    assert parent_pid_from([]) is None


@linux_only
def test_the_kernel_kills_a_child_that_holds_the_gil_when_its_parent_is_killed() -> None:
    with parent_and_child(HOLDS_THE_GIL) as (parent, child_pid, mechanism):
        assert mechanism == "pdeathsig"
        assert alive(child_pid)
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(child_pid), 5, what="the child to die with its parent")


def test_the_fallback_thread_ends_a_child_whose_parent_is_killed() -> None:
    with parent_and_child(SLEEPS_WITH_THE_FALLBACK) as (parent, child_pid, mechanism):
        assert mechanism == "poll"
        assert alive(child_pid)
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(child_pid), 5, what="the child to notice its parent is gone")


@pytest.mark.parametrize("prctl", [True, False])
def test_a_child_whose_parent_died_before_it_armed_exits_at_once(prctl: bool) -> None:
    # The parent passed its pid, then died before the child armed: getppid()
    # is now someone else. A finished process's pid stands in for that parent.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code = (
        "import sys\nfrom netdist.parent_death import exit_with_parent, parent_pid_from\n"
        f"exit_with_parent(parent_pid_from(sys.argv[1:]), prctl={prctl})\nprint('still here')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, PARENT_PID_FLAG, str(gone.pid)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EXIT_CODE
    assert "still here" not in done.stdout


def test_exit_with_parent_keeps_a_child_whose_parent_lives() -> None:
    code = "import os\nfrom netdist.parent_death import exit_with_parent\nprint(exit_with_parent(os.getppid()))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    assert done.stdout.strip() == ("pdeathsig" if sys.platform.startswith("linux") else "poll")
