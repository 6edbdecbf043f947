"""A result reaches its handler while its commit waits for the disk; what the handler does with it
commits after it, and only if it commits (server/result_inbox.py, store/writer.py ``early``).

The latency breakdown had the lone job's result commit (0.42 ms) and its trip to the handler host
(0.35 ms) one after the other on the round trip. The result write now hands its results to the
handler as soon as it ran, before its COMMIT; the handler's call is written behind it, and only if the
results were stored (``record_batch``'s ``handed``). Slowed or failed on purpose here, in the real
server's store.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from netdist.api.v1 import admin_pb2
from netdist.server.host_protocol import ProcessResults
from netdist.server.runtime import RunningHandler
from netdist.server.store import jobs as job_store
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

pytestmark = pytest.mark.in_process
HOLD_SECONDS = 1.0


class ResultWrites:
    """Notes, in order and from any thread, what result writes, their commits, the handler's calls
    and the commits of its saves did, each with the job ids it was about; holds or fails the commits of
    result writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cluster: Cluster, *, fail: bool = False) -> None:
        self.lock = threading.Lock()
        self.noted = threading.Condition(self.lock)
        self.events: list[tuple[str, frozenset[int]]] = []
        # By connection: the engine's readers commit and roll back too, from other threads.
        self.pending: dict[Any, frozenset[int]] = {}  # ids of the result writes in the open transaction
        self.pending_save: dict[Any, frozenset[int]] = {}  # ids a save in the transaction marks processed
        self.fail = fail
        """Every commit of the first result write fails, alone or not, until this is set False."""
        self.failing: frozenset[int] | None = None
        original_store, original_save, original_call = (
            job_store.store_settlements,
            job_store.record_batch,
            RunningHandler._call,
        )

        def store(conn: Any, settlements: Any, *args: Any) -> Any:
            stored = original_store(conn, settlements, *args)
            ids = frozenset(s.result.job_id for s in settlements)
            self.note("ran", ids)
            with self.lock:  # one transaction may hold several result writes (group commit)
                self.pending[conn] = self.pending.get(conn, frozenset()) | ids
            return stored

        def save(conn: Any, handler_id: str, **kwargs: Any) -> Any:
            saved = original_save(conn, handler_id, **kwargs)
            with self.lock:
                self.pending_save[conn] = self.pending_save.get(conn, frozenset()) | frozenset(kwargs["processed"])
            return saved

        async def call(runtime: RunningHandler, request: Any) -> Any:
            if isinstance(request, ProcessResults):
                self.note("call", frozenset(r.job_id for r in request.items))
            return await original_call(runtime, request)

        def commit(conn: Any) -> None:
            with self.lock:
                ids = self.pending.pop(conn, frozenset())
                saves = self.pending_save.pop(conn, frozenset())
                if ids and self.fail and self.failing is None:
                    self.failing = ids
                failing = self.fail and self.failing is not None and bool(ids & self.failing)
            if not ids:
                if saves:
                    self.note("save", saves)
                return
            # A slow disk: the commit ends once the handler has the results (or after a while).
            with self.lock:
                self.noted.wait_for(lambda: any(k == "call" and i & ids for k, i in self.events), HOLD_SECONDS)
            if failing:
                self.note("failed", ids)
                raise RuntimeError("this commit of results fails on purpose")
            self.note("committing", ids)
            if saves:
                self.note("save", saves)

        def rollback(conn: Any) -> None:
            with self.lock:
                self.pending.pop(conn, None)
                self.pending_save.pop(conn, None)

        monkeypatch.setattr(job_store, "store_settlements", store)
        monkeypatch.setattr(job_store, "record_batch", save)
        monkeypatch.setattr(RunningHandler, "_call", call)
        event.listen(cluster.app.dispatcher.writer._engine, "commit", commit)
        event.listen(cluster.app.dispatcher.writer._engine, "rollback", rollback)

    def note(self, what: str, ids: frozenset[int]) -> None:
        with self.lock:
            self.events.append((what, ids))
            self.noted.notify_all()

    def first(self, what: str, job_id: int) -> int:
        """Where the first event ``what`` about ``job_id`` is in the order."""
        found = [i for i, (kind, ids) in enumerate(self.events) if kind == what and job_id in ids]
        assert found, f"no {what} about job {job_id} in {self.events}"
        return found[0]


def test_a_result_reaches_its_handler_during_its_commit_and_the_handlers_work_commits_after(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = ResultWrites(monkeypatch, cluster)
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "count.py", count=3)).handler.id
    cluster.add_worker("w1", slots=1)
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)

    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.result_summary == f"1.0 sum={expected_sum(3)} seen=3 failures=0"
    listed = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status="processed"), timeout=30)
    processed = {job.id for job in listed.jobs}
    assert len(processed) == 3
    for job_id in processed:  # nothing the handler did with a result was stored before the result
        assert writes.first("committing", job_id) < writes.first("save", job_id), writes.events
    # The first result reached the idle handler while its commit waited (a commit that waited for
    # nothing would give up after HOLD_SECONDS and come before the call). A later one may find the
    # handler's loop waiting to commit its last call, which waits behind this held commit.
    first = min(processed)
    assert writes.first("ran", first) < writes.first("call", first) < writes.first("committing", first)


def test_results_whose_write_fails_after_their_handler_had_them_are_not_its_work(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler fails, saying so; nothing it did with them is stored. The worker sends the results
    again, and the handler, started again, processes each result once from what was stored."""
    writes = ResultWrites(monkeypatch, cluster, fail=True)
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "count.py", count=6)).handler.id
    cluster.add_worker("w1", slots=1)
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)

    info = cluster.api.wait_state(hid, "failed", timeout=60)
    assert "results handed to the handler were not stored: their write failed" in info.message
    assert "start it again" in info.message
    failed = writes.failing
    assert failed and not [ids for kind, ids in writes.events if kind == "save" and ids & failed]  # none committed
    assert writes.first("call", min(failed)) < writes.first("failed", min(failed))  # the handler had them

    writes.fail = False
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    info = cluster.api.wait_state(hid, "finished", timeout=60)
    assert info.jobs_processed == 6
    assert info.result_summary == f"1.0 sum={expected_sum(6)} seen=6 failures=0"  # each result once
