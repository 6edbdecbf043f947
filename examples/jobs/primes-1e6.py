# /// script
# dependencies = []
# [tool.netdist]
# package = "netdist-example-primes"
# handler = "PrimeCounter"
# job = "primes below 1e6"
# auto-start = true
# max-attempts = 3
# job-timeout = 60
# [tool.netdist.settings]
# limit = 1_000_000
# chunk = 10_000
# ///
"""Count the primes in one range [lo, hi) (runs on a worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import primality  # from the dependency wheel netdist-example-primality

if TYPE_CHECKING:
    from netdist.handler import JobContext

STEPS = 4


def process(job_input: dict[str, int], ctx: JobContext) -> dict[str, Any]:
    lo, hi = job_input["lo"], job_input["hi"]
    count, largest = 0, None
    step = max(1, -(-(hi - lo) // STEPS))
    for start in range(lo, hi, step):
        found = primality.primes_in(start, min(start + step, hi))
        count += len(found)
        if found:
            largest = found[-1]
        ctx.progress(100 * (min(start + step, hi) - lo) / (hi - lo), f"{count} primes so far")
    return {"count": count, "largest": largest}
