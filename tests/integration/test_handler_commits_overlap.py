"""A handler's next call goes while its last call's commit is on its way, and a call whose commit
failed is the last one whose work can reach the store.

Traced in a 50,000-job benchmark: the handler's loop waited for each of its commits (a group commit,
20-90 ms under load) before its next call, and both workers sat idle with every job done while it
waited. The loop now awaits a call's commit only before it submits the next one.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from netdist.api.v1 import admin_pb2
from netdist.server.runtime import RunningHandler
from netdist.server.store import jobs as job_store
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.in_process
SLOW_COMMIT_SECONDS = 0.3


class Recorder:
    """What the handler's loop and the store's writer did, in order, from either thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, float]] = []

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append((what, time.monotonic()))


def record(monkeypatch: pytest.MonkeyPatch, recorder: Recorder, *, fail_at: int | None = None) -> None:
    """Record host calls and the saves of calls that made jobs ("save:N" as the N-th such call's save runs,
    "saved:N" as it returns), slowed down; the ``fail_at``-th such save fails (each time the writer runs it:
    alone again after its batch failed, too). A save that returned may still be rolled back with its batch
    and run again alone: the writer groups saves into one transaction."""
    original_call, original_save = RunningHandler._call, job_store.record_batch
    saves: list[int] = []  # the first job id of each save with jobs, in order

    async def call(self: RunningHandler, request: Any) -> Any:
        recorder.note("call:" + type(request).__name__)
        return await original_call(self, request)

    def save(conn: Any, handler_id: str, **kwargs: Any) -> Any:
        if not kwargs["new_jobs"]:
            return original_save(conn, handler_id, **kwargs)
        first = kwargs["new_ids"][0]
        if first not in saves:
            saves.append(first)
        n = saves.index(first) + 1
        recorder.note(f"save:{n}")
        if n == fail_at:
            raise ValueError("this save fails on purpose")
        time.sleep(SLOW_COMMIT_SECONDS)  # the writer's thread: a slow commit
        result = original_save(conn, handler_id, **kwargs)
        recorder.note(f"saved:{n}")
        return result

    monkeypatch.setattr(RunningHandler, "_call", call)
    monkeypatch.setattr(job_store, "record_batch", save)


def test_the_next_call_goes_while_the_last_commit_is_on_its_way(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    record(monkeypatch, recorder)
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "count.py", count=200)).handler.id
    cluster.add_worker("w1", slots=2)
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)

    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.jobs_processed == 200
    assert info.result_summary == f"1.0 sum={expected_sum(200)} seen=200 failures=0"
    kinds = [what for what, _ in recorder.events]
    saved = {k for k in kinds if k.startswith("saved:")}
    assert saved == {"saved:1", "saved:2", "saved:3", "saved:4"}, " ".join(kinds)  # 50 jobs a call; none skipped
    makers = [i for i, what in enumerate(kinds) if what == "call:CreateMoreJobs"][:4]  # the calls that made them
    # Waiting for each commit, a 'saved' would come between any two of them.
    assert any(not _saved_in(kinds[a:b]) for a, b in itertools.pairwise(makers)), " ".join(kinds)


def test_a_failed_commit_is_the_last_whose_call_reaches_the_store(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    record(monkeypatch, recorder, fail_at=2)
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "count.py", count=1000)).handler.id
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)  # no worker: its calls only make jobs

    info = cluster.api.wait_state(hid, "failed", timeout=60)
    assert "this save fails on purpose" in info.message
    kinds = [what for what, _ in recorder.events]
    after = kinds[kinds.index("save:2") :]  # from the save that fails on: the first may run again (its batch)
    assert not [k for k in after if k.startswith("saved:") and k != "saved:1"], kinds  # none after it commits
    assert after.count("call:CreateMoreJobs") <= 1, kinds
    assert info.jobs_total == 1000 and info.jobs_available == 50  # the first call's 50 jobs, committed


def _saved_in(kinds: list[str]) -> bool:
    return any(k.startswith("saved:") for k in kinds)
