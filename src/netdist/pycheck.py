"""Is a job script valid Python defining a top-level ``process``? Checked without running it.

:func:`problem` is the check. The server never runs it itself: parsing a
megabyte of Python holds the GIL for seconds and can take a gigabyte of
memory (``"a\\n" * 500_000`` took 9 s and 900 MB), so it runs this module as a
child (``python -I -m netdist.pycheck CPU_SECONDS MEMORY_BYTES``, the script
on stdin) that caps its own CPU time and data size first, says ``ready``, and
answers one line of JSON: ``{"problem": null}`` or ``{"problem": "..."}``; a child that runs
out of either answers ``{"limit": "..."}`` or dies of SIGXCPU. See
:mod:`netdist.server.script_check`.
"""

from __future__ import annotations

import ast
import json
import resource
import sys


def problem(source: str) -> str | None:
    """Why ``source`` is no valid job script as Python; None if it is one."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"script is not valid Python: line {exc.lineno}: {exc.msg}"
    except ValueError as exc:  # a NUL byte, on some Python versions
        return f"script is not valid Python: {exc}"
    if not any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "process" for node in tree.body
    ):
        return "script defines no top-level function 'process(job_input, ctx)'"
    return None


def main(argv: list[str]) -> int:
    cpu_seconds, memory_bytes = int(argv[0]), int(argv[1])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    sys.stdout.buffer.write(b"ready\n")  # the server's clock for the script starts now
    sys.stdout.buffer.flush()
    try:
        source = sys.stdin.buffer.read().decode("utf-8")
        answer: dict[str, str | None] = {"problem": problem(source)}
    except MemoryError:
        answer = {"limit": "memory"}
    except RecursionError:
        answer = {"limit": "nesting"}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
