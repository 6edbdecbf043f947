# /// script
# dependencies = []
# [tool.netdist]
# package = "netdist-example-primes"
# handler = "PrimeCounter"
# job = "primes below 2e6, small chunks"
# auto-start = true
# max-attempts = 5
# job-timeout = 30
# max-parallel-jobs = 16
# priority = 2.0
# [tool.netdist.settings]
# limit = 2_000_000
# chunk = 2_500
# ///
"""Count the primes in one range [lo, hi), checking each odd number with
Miller-Rabin rather than sieving: many small jobs, for watching the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import primality  # from the dependency wheel netdist-example-primality

if TYPE_CHECKING:
    from netdist.handler import JobContext


def process(job_input: dict[str, int], ctx: JobContext) -> dict[str, Any]:
    lo, hi = job_input["lo"], job_input["hi"]
    ctx.progress(0, f"testing {lo}..{hi - 1}")
    count, largest = 0, None
    for n in range(lo, hi):
        if primality.is_prime(n):
            count += 1
            largest = n
    ctx.progress(100, f"{count} primes")
    return {"count": count, "largest": largest}
