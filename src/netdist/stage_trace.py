"""Stage stamps, for ``bench/latency_breakdown.py``.

With ``NETDIST_TRACE_STAGES=1`` in its environment, a server or worker writes a
line ``netdist-stage <unix time> <stage>`` to stderr at each stage of a job's
way: the handler's call returns, its jobs are committed, the lease is committed
and sent, the worker receives it, the job starts and ends, the result arrives,
is committed and is read for the handler. The benchmark keeps one job in flight
and reads each job's stages back from the logs. Off (the default), a stamp is a
call and the test of a constant.
"""

from __future__ import annotations

import os
import sys
import time

ON = os.environ.get("NETDIST_TRACE_STAGES") == "1"


def stamp(stage: str) -> None:
    if ON:
        sys.stderr.write(f"netdist-stage {time.time():.6f} {stage}\n")
