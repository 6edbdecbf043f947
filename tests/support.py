"""A small handler package written on the fly, for the integration tests; process probes."""

from __future__ import annotations

import textwrap
from pathlib import Path

from netdist.testing import write_wheel

HANDLER = '''
from dataclasses import dataclass
from netdist.handler import Handler

VERSION = "{version}"


@dataclass
class Settings:
    count: int = 20
    sleep: float = 0.0
    fail_every: int = 0
    gate: str = ""  # jobs report progress 42 and wait until this file exists
    slow_attempts: int = 0  # attempts up to this one sleep slow_sleep first
    slow_sleep: float = 0.0
    raise_at: int = -1  # process_result raises for this job (a bug in the handler)
    exit_at: int = -1  # process_result kills the handler host for this job
    hang_at: int = -1  # process_result never returns for this job
    process_sleep: float = 0.0  # process_result takes this long; each call logs how many it took


class Counter(Handler[Settings]):
    """Enqueues ``count`` jobs {{"i": i}}; sums the outputs in its state."""

    settings_class = Settings

    def initialize(self):
        self.state.setdefault("next", 0)
        self.state.setdefault("sum", 0)
        self.state.setdefault("seen", 0)
        self.state.setdefault("failures", 0)
        self.log.info("counter %s initialized at %d", VERSION, self.state["next"])
        self.in_call = 0  # results taken since the last summary(), which ends every call

    def total_job_count(self):
        return self.settings.count

    def create_more_jobs(self):
        start = self.state["next"]
        stop = min(self.settings.count, start + 50)
        for i in range(start, stop):
            job = {{"i": i, "sleep": self.settings.sleep, "fail_every": self.settings.fail_every}}
            if self.settings.gate:
                job["gate"] = self.settings.gate
            if self.settings.slow_attempts:
                job["slow"] = [self.settings.slow_attempts, self.settings.slow_sleep]
            self.enqueue(job, extra={{"i": i}})
        self.state["next"] = stop

    def process_result(self, job_input, output, extra):
        assert extra["i"] == job_input["i"]
        if job_input["i"] == self.settings.raise_at:
            raise RuntimeError(f"handler bug at {{job_input['i']}}")
        if job_input["i"] == self.settings.exit_at:
            import os
            os._exit(3)
        if job_input["i"] == self.settings.hang_at:
            import time
            self.log.warning("hanging at %d", job_input["i"])
            time.sleep(3600)
        if self.settings.process_sleep:
            import time
            time.sleep(self.settings.process_sleep)
            self.in_call += 1
        self.state["sum"] += output["double"]
        self.state["seen"] += 1
        self.state.setdefault("versions", {{}})
        self.state["versions"][VERSION] = self.state["versions"].get(VERSION, 0) + 1

    def process_failure(self, job_input, failure, extra):
        self.state["failures"] += 1
        self.log.warning("job %d failed for good: %s", job_input["i"], failure.message)

    def summary(self):
        if self.in_call:
            self.log.info("took %d results in one call", self.in_call)
            self.in_call = 0
        return f"{{VERSION}} sum={{self.state['sum']}} seen={{self.state['seen']}} failures={{self.state['failures']}}"
'''

SCRIPT = """# /// script
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "{job}"
{settings}# [tool.netdist.settings]
{custom}# ///
import os
import time


def process(job_input, ctx):
    ctx.progress(10, "started")
    slow_attempts, slow_sleep = job_input.get("slow", [0, 0])
    if ctx.attempt <= slow_attempts:
        time.sleep(slow_sleep)
    if job_input.get("gate"):
        for step in range(1, 42):
            ctx.progress(step, f"step {{step}}")  # many calls; the worker coalesces them
        ctx.progress(42, "waiting at the gate")
        deadline = time.monotonic() + 60
        while not os.path.exists(job_input["gate"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    if job_input["sleep"]:
        time.sleep(job_input["sleep"])
    every = job_input.get("fail_every") or 0
    if every and job_input["i"] % every == 0:
        raise ValueError(f"job {{job_input['i']}} fails on purpose")
    ctx.progress(100, "done")
    return {{"double": job_input["i"] * 2, "pid": os.getpid()}}
"""


def counter_wheel(out_dir: Path, version: str = "1.0") -> Path:
    return write_wheel(
        out_dir / version,
        name="counter",
        version=version,
        files={"counter/__init__.py": "", "counter/handler.py": HANDLER.format(version=version)},
        entry_points={"netdist.handlers": {"Counter": "counter.handler:Counter"}},
    )


def counter_script(path: Path, *, job: str = "count", settings: str = "", **custom: object) -> Path:
    lines = "".join(f"# {line}\n" for line in textwrap.dedent(settings).strip().splitlines())
    custom_lines = "".join(f"# {k} = {v!r}\n".replace("'", '"') for k, v in custom.items())
    path.write_text(SCRIPT.format(job=job, settings=lines, custom=custom_lines))
    return path


def expected_sum(count: int) -> int:
    return sum(2 * i for i in range(count))


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped (Linux: reads /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: reads /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
