"""The collector settings of netdist's long-running processes (src/netdist/gc_tuning.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from netdist.gc_tuning import GC_THRESHOLDS


def test_tuning_freezes_what_start_up_made_and_raises_the_thresholds() -> None:
    # In a process of its own: the test run's collector stays as it is.
    script = (
        "import gc, json; from netdist.gc_tuning import tune_collector; before = gc.get_threshold();"
        " tune_collector(); print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    before, after, frozen = json.loads(out.stdout)
    assert tuple(before) != GC_THRESHOLDS  # Python's own (700, 10, 10 on 3.11)
    assert tuple(after) == GC_THRESHOLDS
    assert frozen > 1000  # the modules and classes imported so far are out of every collection
