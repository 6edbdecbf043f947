"""A handler slower than its workers gets no more jobs while its results wait for it.

Seen at 17,000 jobs/s (bench/scale.py million): workers returned results faster than the handler's
``process_result`` took them, the handler was asked for more jobs all the same (only its queue was
counted), and 76,000 results waited in the store by the end, which grew with them. Here the handler
takes 20 ms a result and the limits are made small: the results waiting must stay within them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from netdist.server import runtime
from netdist.server.store.schema import jobs
from tests.faults.invariants import reader_engine
from tests.faults.tally import tally_script, tally_wheel
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.in_process

LOW_WATER, MAX_UNPROCESSED, BATCH = 10, 5, 5
BOUND = MAX_UNPROCESSED + LOW_WATER + BATCH  # asked at most once more when the last results came


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_results_waiting_for_a_slow_handler_stay_bounded(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "LOW_WATER", LOW_WATER)
    monkeypatch.setattr(runtime, "MAX_UNPROCESSED", MAX_UNPROCESSED)
    cluster.api.upload(tally_wheel(tmp_path / "wheels"))
    cluster.add_worker("w1", slots=2)
    cluster.add_worker("w2", slots=2)
    engine = reader_engine(cluster.db_url)
    waiting: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            with engine.connect() as conn:
                waiting.append(
                    conn.execute(
                        select(func.count()).select_from(jobs).where(jobs.c.status == "succeeded")
                    ).scalar_one()
                )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        script = tally_script(tmp_path / "slow.py", job="slow", count=200, batch=BATCH, process_sleep=0.02)
        hid = cluster.api.add_script(script).handler.id
        info = cluster.api.wait_state(hid, "finished", timeout=60)
    finally:
        done.set()
        sampler.join(10)
        engine.dispose()
    assert info.jobs_processed == 200
    assert waiting and max(waiting) <= BOUND, f"results waiting for the handler reached {max(waiting)}"
