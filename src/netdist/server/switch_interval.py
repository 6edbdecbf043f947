"""The server's GIL switch interval: how long the event loop may keep the GIL from the store writer.

The store writer (server/store/writer.py) runs SQLite on its own thread. Python's
sqlite3 lets go of the GIL around each statement's step and must take it back
after; while the event loop is busy, each take-back waits until the loop is made
to let go, which Python does after the switch interval (5 ms by default). A
group commit of 2,000 new jobs is about ten such take-backs, so it took 44-63
ms of wall time for a few ms of work, and everything behind it (the leases'
acks, the handler's next results) waited that long.

At 0.5 ms, in alternating 20,000-job 2x1 runs against the default (bench/README.md):
24 pairs, the median of the per-pair ratios 1.056 (16 of 24 faster), the first
result 74 against 83 ms (medians). The loop pays for the extra switches only
while the writer asks for the GIL.
"""

from __future__ import annotations

import sys

SERVER_SWITCH_INTERVAL_SECONDS = 0.0005


def let_the_writer_in() -> None:
    """Set the process's switch interval for the server (call once, before the loop starts)."""
    sys.setswitchinterval(SERVER_SWITCH_INTERVAL_SECONDS)
