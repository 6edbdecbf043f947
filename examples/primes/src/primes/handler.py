"""PrimeCounter: counts the primes below ``limit`` in ranges of ``chunk`` numbers.

Each job is a range ``{"lo": a, "hi": b}``; its job script (on the workers)
answers ``{"count": n, "largest": p}``. The cursor and the running totals
live in ``self.state``, which the server saves together with each batch of
processed results, so a restarted handler carries on where it stopped and
no result is counted twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from netdist.handler import Handler, JobFailure, SettingsError

BATCH = 200
"""At most this many jobs per call of create_more_jobs."""


@dataclasses.dataclass(frozen=True, slots=True)
class PrimeSettings:
    """The job script's ``[tool.netdist.settings]`` table."""

    limit: int = 1_000_000
    chunk: int = 10_000


class PrimeCounter(Handler[PrimeSettings]):
    settings_class = PrimeSettings

    def initialize(self) -> None:
        if self.settings.limit < 3:
            raise SettingsError(f"setting 'limit': must be at least 3, got {self.settings.limit}")
        if self.settings.chunk < 1:
            raise SettingsError(f"setting 'chunk': must be at least 1, got {self.settings.chunk}")
        self.state.setdefault("next", 2)  # first number of the next range to hand out
        self.state.setdefault("count", 0)
        self.state.setdefault("largest", None)
        self.state.setdefault("failed_ranges", [])

    def total_job_count(self) -> int:
        return math.ceil((self.settings.limit - 2) / self.settings.chunk)

    def create_more_jobs(self) -> None:
        limit, chunk = self.settings.limit, self.settings.chunk
        lo: int = self.state["next"]
        for _ in range(BATCH):
            if lo >= limit:
                break
            hi = min(lo + chunk, limit)
            self.enqueue({"lo": lo, "hi": hi})
            lo = hi
        self.state["next"] = lo

    def process_result(self, job_input: Any, output: Any, extra: Any) -> None:
        self.state["count"] += output["count"]
        largest = output["largest"]
        if largest is not None and (self.state["largest"] is None or largest > self.state["largest"]):
            self.state["largest"] = largest

    def process_failure(self, job_input: Any, failure: JobFailure, extra: Any) -> None:
        super().process_failure(job_input, failure, extra)  # logs it
        self.state["failed_ranges"].append([job_input["lo"], job_input["hi"]])

    def on_start(self) -> None:
        self.log.info(
            "counting primes below %d in ranges of %d",
            self.settings.limit,
            self.settings.chunk,
        )

    def on_finished(self) -> None:
        self.log.info("answer: %s", self.summary())
        if self.state["failed_ranges"]:
            self.log.warning("ranges not counted: %s", self.state["failed_ranges"])

    def summary(self) -> str:
        count, largest = self.state.get("count", 0), self.state.get("largest")
        text = f"{count} primes below {self.settings.limit}"
        if largest is not None:
            text += f", largest {largest}"
        missed = len(self.state.get("failed_ranges", []))
        if missed:
            text += f" ({missed} ranges failed: incomplete)"
        return text
