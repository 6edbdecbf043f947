"""The benchmark's handler package and job scripts, written on the fly.

Two handlers, both timing themselves on the server side (in the handler host
process) and reporting through ``summary()``, which reaches the bench as
``HandlerInfo.result_summary`` (JSON, at most 2000 characters):

- ``Noop`` enqueues ``warmup`` jobs, waits for their results (so worker and
  executor start-up are out of the measurement), then enqueues ``count`` jobs
  ``{"i": i}`` (with ``payload_bytes`` of padding, returned as the output) in
  batches of ``batch`` per ``create_more_jobs`` call. It records ``time.time()``
  of the first measured enqueue, of the first measured result, of every
  ``mark_every``-th (``marks``) and of the last one.
- ``Latency`` keeps one job in flight: it enqueues one job ``{"t0": time.time()}``
  per result. The job script returns ``time.time() - t0`` taken at the start of
  ``process`` on the worker (same machine, same clock): the dispatch latency
  from enqueue to the start of ``process``. The handler also records the round
  trip, enqueue to ``process_result``.
"""

from __future__ import annotations

from pathlib import Path

from netdist.testing import write_wheel

PACKAGE = "netdistbench"
VERSION = "1.0"

HANDLERS = """
import json
import time
from dataclasses import dataclass

from netdist.handler import Handler


@dataclass
class NoopSettings:
    count: int = 20000
    batch: int = 2000
    warmup: int = 0
    mark_every: int = 0
    payload_bytes: int = 0


class Noop(Handler[NoopSettings]):
    settings_class = NoopSettings

    def initialize(self):
        for key in ("next", "seen", "warm_sent", "warm_seen"):
            self.state.setdefault(key, 0)

    def total_job_count(self):
        return self.settings.count + self.settings.warmup

    def create_more_jobs(self):
        s, cfg = self.state, self.settings
        if s["warm_sent"] < cfg.warmup:
            for w in range(cfg.warmup):
                self.enqueue({"w": w})
            s["warm_sent"] = cfg.warmup
            return
        if s["warm_seen"] < cfg.warmup:
            return  # warm-up jobs are pending, so enqueuing nothing does not finish the handler
        start = s["next"]
        stop = min(cfg.count, start + cfg.batch)
        if start == 0 and stop > 0:
            s["t_first_enqueue"] = time.time()
        pad = "x" * cfg.payload_bytes
        for i in range(start, stop):
            self.enqueue({"i": i, "pad": pad} if pad else {"i": i})
        s["next"] = stop

    def process_result(self, job_input, output, extra):
        s = self.state
        if "w" in job_input:
            s["warm_seen"] += 1
            return
        s["seen"] += 1
        if s["seen"] == 1:
            s["t_first_result"] = time.time()
        if self.settings.mark_every and s["seen"] % self.settings.mark_every == 0:
            s.setdefault("marks", []).append(time.time())
        if s["seen"] == self.settings.count:
            s["t_last_result"] = time.time()

    def summary(self):
        keys = ("seen", "warm_seen", "t_first_enqueue", "t_first_result", "t_last_result", "marks")
        return json.dumps({k: self.state.get(k) for k in keys})


@dataclass
class LatencySettings:
    samples: int = 500
    warmup: int = 20


def _pct(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Latency(Handler[LatencySettings]):
    # The samples stay out of the state, and the summary is worked out once they are all in: the
    # state is saved and the summary asked for after every call, both on the path being timed.

    settings_class = LatencySettings

    def initialize(self):
        for key in ("sent", "seen"):
            self.state.setdefault(key, 0)
        self.lat, self.rtt = [], []  # lost with the host; a benchmark starts afresh

    def total_job_count(self):
        return self.settings.samples + self.settings.warmup

    def create_more_jobs(self):
        s = self.state
        if s["sent"] >= self.settings.samples + self.settings.warmup or s["sent"] > s["seen"]:
            return  # done, or one job is in flight
        self.enqueue({"k": s["sent"], "t0": time.time()})
        s["sent"] += 1

    def process_result(self, job_input, output, extra):
        s = self.state
        s["seen"] += 1
        if job_input["k"] >= self.settings.warmup:
            self.lat.append(output["latency"])
            self.rtt.append(time.time() - job_input["t0"])

    def summary(self):
        lat, rtt = self.lat, self.rtt
        out = {"n": len(lat)}
        if len(lat) < self.settings.samples:
            return json.dumps(out)
        for name, values in (("lat", lat), ("rtt", rtt)):
            for q in (50, 90, 99, 100):
                out[f"{name}_p{q}"] = _pct(values, q)
            out[f"{name}_mean"] = sum(values) / len(values) if values else None
        return json.dumps(out)
"""

NOOP_SCRIPT = """# /// script
# [tool.netdist]
# package = "netdistbench"
# handler = "Noop"
# job = "{job}"
# auto-start = {auto_start}
# [tool.netdist.settings]
# count = {count}
# batch = {batch}
# warmup = {warmup}
# mark_every = {mark_every}
# payload_bytes = {payload_bytes}
# ///
def process(job_input, ctx):
    return job_input
"""

LATENCY_SCRIPT = """# /// script
# [tool.netdist]
# package = "netdistbench"
# handler = "Latency"
# job = "{job}"
# auto-start = true
# [tool.netdist.settings]
# samples = {samples}
# warmup = {warmup}
# ///
import time


def process(job_input, ctx):
    return {{"latency": time.time() - job_input["t0"]}}
"""


def bench_wheel(out_dir: Path) -> Path:
    return write_wheel(
        out_dir,
        name=PACKAGE,
        version=VERSION,
        files={f"{PACKAGE}/__init__.py": "", f"{PACKAGE}/handlers.py": HANDLERS},
        entry_points={
            "netdist.handlers": {"Noop": f"{PACKAGE}.handlers:Noop", "Latency": f"{PACKAGE}.handlers:Latency"}
        },
    )


def noop_script(
    *,
    job: str,
    count: int,
    batch: int,
    warmup: int,
    mark_every: int = 0,
    payload_bytes: int = 0,
    auto_start: bool = True,
) -> str:
    return NOOP_SCRIPT.format(
        job=job,
        count=count,
        batch=batch,
        warmup=warmup,
        mark_every=mark_every,
        payload_bytes=payload_bytes,
        auto_start=str(auto_start).lower(),
    )


def latency_script(*, job: str, samples: int, warmup: int) -> str:
    return LATENCY_SCRIPT.format(job=job, samples=samples, warmup=warmup)
