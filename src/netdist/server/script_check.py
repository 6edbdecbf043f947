"""A job script's Python, checked in a child process with its own CPU and memory limits.

The metadata block is read in the server (linear, off the event loop); the
Python is parsed by :mod:`netdist.pycheck` in a child, because parsing holds
the GIL (a thread would not keep the event loop free) and a megabyte of
adversarial Python takes seconds and up to a gigabyte to parse. The child
gets ``CPU_SECONDS`` of CPU and ``MEMORY_BYTES`` of data, far more than any
real script needs (a 50 KB script parses in about 30 ms), and must answer
within ``WALL_SECONDS`` of being handed the script, so that the upload is
answered within a second whatever the script holds; at most
``CONCURRENT_CHECKS`` run at once. A script past any of these limits is
refused. The child's start-up (``STARTUP_SECONDS`` at most) is not part of the
script's budget: it says ``ready`` first, and the clock for the script starts
then. On a loaded machine an interpreter can take longer than 0.6 s to start,
and an ordinary script must not be refused as "too complex" for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys

from netdist.errors import JobScriptError

log = logging.getLogger("netdist.server.script_check")

CPU_SECONDS = 1
MEMORY_BYTES = 256 * 1024 * 1024
WALL_SECONDS = 0.6
"""The child's answer is awaited this long once it has the script, so an upload is answered within a second."""
STARTUP_SECONDS = 30.0
"""How long the child may take to start and say ``ready`` (a machine under load; not the script's fault)."""
READY = b"ready\n"
CONCURRENT_CHECKS = 2
TOO_COSTLY = (
    f"script is too large or too complex to check as Python (parsing it takes over {WALL_SECONDS:g} s "
    f"or {MEMORY_BYTES >> 20} MiB); keep job scripts small and put data in the job input or the package"
)


class ScriptChecker:
    """Checks job scripts' Python in children, ``CONCURRENT_CHECKS`` at a time."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(CONCURRENT_CHECKS)

    async def check(self, source: bytes) -> None:
        """Raise :class:`JobScriptError` unless ``source`` parses as Python and defines ``process``."""
        async with self._slots:
            answer = await _run_child(source)
        if "limit" in answer:
            raise JobScriptError(TOO_COSTLY)
        problem = answer.get("problem")
        if problem is not None:
            raise JobScriptError(str(problem))


async def _run_child(source: bytes) -> dict[str, object]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-m",
        "netdist.pycheck",
        str(CPU_SECONDS),
        str(MEMORY_BYTES),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={},
        start_new_session=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        try:
            ready = await asyncio.wait_for(child.stdout.readline(), STARTUP_SECONDS)
        except TimeoutError:
            ready = b"nothing within %d s" % STARTUP_SECONDS
        if ready != READY:
            log.warning("the job script checker did not start (said %r)", ready[:80])
            raise JobScriptError("the server could not start its job script checker; see the server log")
        child.stdin.write(source)
        child.stdin.close()
        out = await asyncio.wait_for(_read_answer(child), WALL_SECONDS)
    except TimeoutError:
        log.info("a job script check did not finish within %g s; killed it", WALL_SECONDS)
        return {"limit": "time"}
    finally:
        if child.returncode is None:  # timed out, or the call was cancelled (the client went away)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    if child.returncode != 0:
        return {"limit": f"exit {child.returncode}"}  # SIGXCPU or SIGKILL: past its CPU time
    try:
        answer = json.loads(out)
    except ValueError:
        return {"limit": "no answer"}
    return answer if isinstance(answer, dict) else {"limit": "no answer"}


async def _read_answer(child: asyncio.subprocess.Process) -> bytes:
    """The child's answer line, once it has exited (a write to a child that died early is ignored)."""
    assert child.stdout is not None and child.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await child.stdin.wait_closed()
    out = await child.stdout.read()
    await child.wait()
    return out
