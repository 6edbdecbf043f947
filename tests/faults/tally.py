"""The fault suite's handler package, ``tally``: a counter that keeps the books.

Like tests/support.py's counter, but its state records, per job index, how
many times ``process_result`` saw it, and checks each output against its
input: a job computes ``f(i) = i * i + 7`` and echoes ``i``, so a result
delivered to the wrong job, twice, or not at all shows in the state. Jobs
fail, stall, wait at a gate or die on request (the handler's settings pick
which), and each run of a job can be traced to a file.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netdist.testing import write_wheel

HANDLER = """
import os
import time
from dataclasses import dataclass, field
from netdist.handler import Handler


def f(i):
    return i * i + 7


@dataclass
class Settings:
    count: int = 20
    sleep: float = 0.0  # each job sleeps this long
    gate: str = ""  # jobs in `gated` (or from `gate_from` on) wait until this file exists
    gated: list = field(default_factory=list)
    gate_from: int = -1
    gate_attempts: list = field(default_factory=list)  # only these attempts wait (empty: every one)
    stall_at: int = -1  # this job's first attempt sleeps `stall_seconds`, then fails or returns
    stall_seconds: float = 0.0
    stall_fails: bool = False
    poison: dict = field(default_factory=dict)  # {"index": "exit" | "segv" | "memory" | "raise"}
    fail_all: bool = False  # every job raises at once
    pad: int = 0  # bytes of padding in each output (big results)
    trace: str = ""  # each run of a job appends "start|end i attempt pid" here
    raise_at: int = -1  # process_result raises for this job (a handler bug)
    process_sleep: float = 0.0  # process_result takes this long per result
    batch: int = 25
    create_gate: str = ""  # create_more_jobs, from job `create_gate_from` on, touches this path + ".waiting",
    create_gate_from: int = -1  # then waits until the path exists before it enqueues


class Tally(Handler[Settings]):
    settings_class = Settings

    def initialize(self):
        for key, empty in (("next", 0), ("sum", 0), ("seen", {}), ("failed", {}), ("mismatches", [])):
            self.state.setdefault(key, empty)

    def total_job_count(self):
        return self.settings.count

    def create_more_jobs(self):
        s = self.settings
        start = self.state["next"]
        stop = min(s.count, start + s.batch)
        if s.create_gate and 0 <= s.create_gate_from <= start < stop:
            open(s.create_gate + ".waiting", "a").close()
            deadline = time.monotonic() + 90
            while not os.path.exists(s.create_gate) and time.monotonic() < deadline:
                time.sleep(0.02)
        for i in range(start, stop):
            job = {"i": i, "sleep": s.sleep, "pad": s.pad, "trace": s.trace, "fail": s.fail_all,
                   "poison": s.poison.get(str(i), "")}
            if s.gate and (i in s.gated or (s.gate_from >= 0 and i >= s.gate_from)):
                job["gate"] = [s.gate, s.gate_attempts]
            if i == s.stall_at:
                job["stall"] = [s.stall_seconds, s.stall_fails]
            self.enqueue(job, extra={"i": i})
        self.state["next"] = stop

    def process_result(self, job_input, output, extra):
        i = job_input["i"]
        if i == self.settings.raise_at:
            raise RuntimeError(f"handler bug at {i}")
        if self.settings.process_sleep:
            time.sleep(self.settings.process_sleep)
        if extra != {"i": i} or not isinstance(output, dict) or output.get("i") != i or output.get("y") != f(i) \\
                or len(output.get("pad", "")) != self.settings.pad:
            self.state["mismatches"].append(f"job {i}: extra {extra!r}, output {str(output)[:200]}")
        seen = self.state["seen"]
        seen[str(i)] = seen.get(str(i), 0) + 1
        self.state["sum"] += f(i)

    def process_failure(self, job_input, failure, extra):
        self.state["failed"][str(job_input["i"])] = {
            "type": failure.type, "message": failure.message, "attempts": failure.attempts}

    def summary(self):
        st = self.state
        return f"seen={len(st['seen'])} sum={st['sum']} failed={len(st['failed'])} mismatches={len(st['mismatches'])}"
"""

SCRIPT = """# /// script
# [tool.netdist]
# package = "tally"
# handler = "Tally"
# job = "{job}"
{settings}# [tool.netdist.settings]
{custom}# ///
import os
import time


def trace(job_input, what, ctx):
    if job_input["trace"]:
        with open(job_input["trace"], "a") as out:
            out.write(f"{{what}} {{job_input['i']}} {{ctx.attempt}} {{os.getpid()}}\\n")


def process(job_input, ctx):
    i = job_input["i"]
    trace(job_input, "start", ctx)
    ctx.progress(10, "started")
    gate = job_input.get("gate")
    if gate and (not gate[1] or ctx.attempt in gate[1]):
        ctx.progress(42, "waiting at the gate")
        deadline = time.monotonic() + 90
        while not os.path.exists(gate[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
    stall = job_input.get("stall")
    if stall and ctx.attempt == 1:
        time.sleep(stall[0])
        if stall[1]:
            trace(job_input, "end", ctx)
            raise RuntimeError(f"job {{i}}: the stalled first attempt fails late")
    poison = job_input["poison"]
    if poison == "exit":
        os._exit(7)
    if poison == "segv":
        import ctypes
        ctypes.string_at(0)
    if poison == "memory":
        hoard = []
        for _ in range(64):  # up to 1 GiB, 16 MiB at a time, every page touched
            hoard.append(bytearray(16 << 20))
    if poison == "raise" or job_input["fail"]:
        raise ValueError(f"job {{i}} fails on purpose")
    if job_input["sleep"]:
        time.sleep(job_input["sleep"])
    trace(job_input, "end", ctx)
    return {{"i": i, "y": i * i + 7, "pad": "p" * job_input["pad"]}}
"""


def f(i: int) -> int:
    return i * i + 7


def tally_wheel(out_dir: Path, version: str = "1.0") -> Path:
    return write_wheel(
        out_dir / f"tally-{version}",
        name="tally",
        version=version,
        files={"tally/__init__.py": "", "tally/handler.py": HANDLER},
        entry_points={"netdist.handlers": {"Tally": "tally.handler:Tally"}},
    )


def ballast_wheel(out_dir: Path, megabytes: int = 4) -> Path:
    """A dependency wheel of incompressible bytes: a download (or upload) big enough to cut in the middle."""
    data = os.urandom(megabytes << 20)
    return write_wheel(
        out_dir / "ballast", name="ballast", version="1.0", files={"ballast/__init__.py": "", "ballast/blob.bin": data}
    )


def _toml(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def tally_script(path: Path, *, job: str = "tally", settings: str = "auto-start = true", **custom: Any) -> Path:
    """A job script for ``tally``: ``settings`` are ``[tool.netdist]`` lines, ``custom`` the handler's settings."""
    lines = "".join(f"# {line}\n" for line in textwrap.dedent(settings).strip().splitlines())
    custom_lines = "".join(f"# {key} = {_toml(value)}\n" for key, value in custom.items())
    path.write_text(SCRIPT.format(job=job, settings=lines, custom=custom_lines))
    return path
