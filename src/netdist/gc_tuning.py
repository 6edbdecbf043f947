"""Python's cyclic garbage collector tuned for netdist's long-running processes.

The hot paths make a few short-lived objects per job (a lease, a result, their
messages), almost none of them in reference cycles. With Python's thresholds
(700, 10, 10) a collection ran every few hundred jobs and a full one, over every
object start-up made (gRPC, protobuf, SQLAlchemy, their modules and classes),
every 70,000 allocations: 25-37 ms each in a worker, a pause on whatever jobs it
held. Measured with ``gc.callbacks`` over 100,000 no-op jobs on two workers
(bench/README.md): the collector took 7% of each worker's CPU.

The server and the worker call :func:`tune_collector` once start-up has imported
what they run on. The processes that run user code keep Python's defaults: the
executor child (which collected for 0.3% of its CPU) and the handler host (5.5%):
with the host tuned too, 100 handlers at once ran 6-8% slower than before in
three alternating rounds of ``bench/scale.py handlers``, and 5-10% faster in two
without it; that benchmark moves about that much from run to run, so the host
was left as it was.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 50)
"""The collector's thresholds: a young collection every 50,000 allocations net of frees, a full one
every 50,000 x 20 x 50."""


def tune_collector() -> None:
    """Freeze what start-up made (full collections skip it from now on) and raise the thresholds."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
