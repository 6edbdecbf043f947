"""The invariant checker the fault tests run after every fault.

It joins ``netdist-server check`` (the store's own invariants, the data dir's
files) with facts about the run that only a test knows:

- every job is finished (processed or failed), queued, waiting for its
  handler, or held by a live lease (a connected worker's: leases of a gone
  worker must come back within the reconnect grace);
- exactly one accepted result per job: the tally handler's state, read in the
  same snapshot as the jobs, has processed each index once and only the
  processed ones, each output matching its input; failed jobs are the expected
  ones, each with its expected error;
- every result the server acknowledged as accepted (to a hand-driven stream)
  is stored, for the lease it named;
- attempts stay within max-attempts and lease numbers and attempts never go
  down (sampled in the background through the whole test);
- no partial files, in the server's data dir nor (once the run is over) in
  the caches of workers that were not killed;
- the server answers health checks SERVING, and its RSS and open file
  descriptors stay near their level after warm-up (a leak shows, noise does not).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from netdist.channel import ClientSecurity, sync_channel
from netdist.server import check
from netdist.server.store.schema import handlers, jobs
from netdist.testing import Admin, Process, ServerProcess, wait_until
from tests.faults.tally import f

FINISHED = {"processed", "failed"}
WAITING = {"available", "succeeded", "errored"}  # queued, or a result waiting for the handler
LEASE_RETURN_SECONDS = 20.0  # reconnect grace (2 s) plus missed heartbeats, on a loaded machine
RSS_FACTOR = 2.0
FD_SLACK = 50
_WORKER_TEMP_PREFIXES = (".fetch-", ".unpack-")  # worker/blob_source.py, worker/integrity.py


@dataclasses.dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    handler_id: str
    status: str
    lease_no: int
    attempts: int
    worker_id: str | None
    index: int  # the tally job's "i"


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The jobs and the handler's state, read in one transaction."""

    jobs: list[JobRow]
    state: dict[str, Any]
    handler_state: str

    def by_status(self, *statuses: str) -> list[JobRow]:
        return [j for j in self.jobs if j.status in statuses]


@dataclasses.dataclass(frozen=True, slots=True)
class Vitals:
    pid: int
    rss_kb: int
    fds: int


def vitals(pid: int) -> Vitals:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Vitals(pid=pid, rss_kb=rss, fds=len(os.listdir(f"/proc/{pid}/fd")))


def reader_engine(db_url: str) -> Engine:
    """An engine for the test's own reads; on SQLite, a transaction is one snapshot."""
    if make_url(db_url).get_backend_name() != "sqlite":
        return create_engine(db_url, poolclass=NullPool, isolation_level="REPEATABLE READ")
    engine = create_engine(db_url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def read_snapshot(conn: Connection, handler_id: str) -> Snapshot:
    rows = conn.execute(
        select(
            jobs.c.id,
            jobs.c.handler_id,
            jobs.c.status,
            jobs.c.lease_no,
            jobs.c.attempts,
            jobs.c.worker_id,
            jobs.c.input,
        )
        .where(jobs.c.handler_id == handler_id)
        .order_by(jobs.c.id)
    ).all()
    found = conn.execute(
        select(handlers.c.handler_state_json, handlers.c.state).where(handlers.c.id == handler_id)
    ).one()
    return Snapshot(
        jobs=[
            JobRow(r.id, r.handler_id, r.status, r.lease_no, r.attempts, r.worker_id, json.loads(r.input)["i"])
            for r in rows
        ],
        state=json.loads(found.handler_state_json),
        handler_state=found.state,
    )


class LeaseWatch:
    """Samples every job's lease number and attempts in the background; both may only grow."""

    def __init__(self, engine: Engine, interval: float = 0.2) -> None:
        self.engine = engine
        self.interval = interval
        self.seen: dict[int, tuple[int, int]] = {}
        self.regressions: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)

    def start(self) -> LeaseWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> None:
        # The read is under the lock too: the test thread samples while the background one
        # does, and an older read compared after a newer one would look like a regression.
        with self._lock:
            with self.engine.connect() as conn:
                rows = conn.execute(select(jobs.c.id, jobs.c.lease_no, jobs.c.attempts)).all()
            for job_id, lease_no, attempts in rows:
                before = self.seen.get(job_id)
                if before is not None and (lease_no < before[0] or attempts < before[1]):
                    self.regressions.append(
                        f"job {job_id}: lease_no/attempts went from {before} to {(lease_no, attempts)}"
                    )
                self.seen[job_id] = (
                    max(lease_no, before[0]) if before else lease_no,
                    max(attempts, before[1]) if before else attempts,
                )
            self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # the store is restarting, locked, or not created yet: next time
                continue


@dataclasses.dataclass
class Invariants:
    """What every fault test asserts after its fault (see the module docstring)."""

    db_url: str
    data_dir: Path
    engine: Engine
    watch: LeaseWatch
    baseline: Vitals | None = None

    @classmethod
    def open(cls, db_url: str, data_dir: Path) -> Invariants:
        engine = reader_engine(db_url)
        return cls(db_url=db_url, data_dir=data_dir, engine=engine, watch=LeaseWatch(engine).start())

    def close(self) -> None:
        self.watch.stop()
        self.engine.dispose()

    def snapshot(self, handler_id: str) -> Snapshot:
        with self.engine.begin() as conn:
            return read_snapshot(conn, handler_id)

    def warmed_up(self, server: ServerProcess) -> Vitals:
        """Take the server's RSS and open fds now as the level to stay near."""
        self.baseline = vitals(server.popen.pid)
        return self.baseline

    # -- the check ------------------------------------------------------------------------

    def verify(
        self,
        handler_id: str,
        *,
        count: int,
        api: Admin,
        server: ServerProcess,
        workers: Iterable[Process] = (),
        finished: bool = True,
        failing: Mapping[int, str] | None = None,
        acked: Iterable[tuple[int, int]] = (),
        settle_seconds: float = LEASE_RETURN_SECONDS,
    ) -> Snapshot:
        """Assert every invariant for the tally instance ``handler_id`` of ``count`` jobs.

        ``finished``: the run is over (every job processed or failed); otherwise
        jobs may still be queued or out on live leases. ``failing``: the job
        indexes expected to fail, each with a piece of its error's text.
        ``acked``: (job id, lease no) of results the server accepted."""
        failing = dict(failing or {})
        self.verify_store()
        snap = self._leases_are_live(handler_id, api, finished, settle_seconds)
        self._books_balance(snap, count=count, finished=finished, failing=failing)
        self._acked_results_are_stored(snap, acked)
        self.watch.sample()
        assert not self.watch.regressions, self.watch.regressions[:10]
        assert all(j.attempts >= 1 for j in snap.by_status("processed")), "a job was processed without an attempt"
        if finished:
            self.worker_caches_are_whole(workers)
        self._server_is_healthy(server)
        return snap

    def verify_store(self) -> None:
        """netdist-server check finds nothing, in the database and the data dir."""
        with self.engine.begin() as conn:
            report = check.check(conn, self.data_dir)
        assert report.ok, "netdist-server check found:\n" + "\n".join(str(p) for p in report.problems)

    def _leases_are_live(self, handler_id: str, api: Admin, finished: bool, timeout: float) -> Snapshot:
        """Every job is finished, waiting, or leased to a connected worker (gone ones' leases come back)."""
        last: list[str] = []

        def settled() -> Snapshot | None:
            snap = self.snapshot(handler_id)
            live = {w.id for w in api.workers() if w.connected}
            allowed = FINISHED if finished else FINISHED | WAITING
            last[:] = [
                f"job {j.id} (i={j.index}) is {j.status}" + (f" by {j.worker_id}" if j.worker_id else "")
                for j in snap.jobs
                if j.status not in allowed and not (not finished and j.status == "leased" and j.worker_id in live)
            ]
            return None if last else snap

        try:
            return wait_until(settled, timeout, interval=0.2, what="every job to be settled")
        except TimeoutError:
            raise AssertionError(
                "jobs neither finished, queued nor held by a live lease:\n" + "\n".join(last[:20])
            ) from None

    @staticmethod
    def _books_balance(snap: Snapshot, *, count: int, finished: bool, failing: Mapping[int, str]) -> None:
        state = snap.state
        seen: dict[str, int] = state.get("seen", {})
        assert state.get("mismatches") == [], f"outputs that do not match their inputs: {state.get('mismatches')}"
        twice = {i: n for i, n in seen.items() if n != 1}
        assert not twice, f"process_result saw these jobs more than once: {twice}"
        processed = sorted(j.index for j in snap.by_status("processed"))
        assert sorted(int(i) for i in seen) == processed, (
            "the handler's state and the processed jobs disagree (state saved apart from its results?): "
            f"state has {sorted(int(i) for i in seen)}, the store {processed}"
        )
        assert state.get("sum") == sum(f(int(i)) for i in seen)
        failed_jobs = sorted(j.index for j in snap.by_status("failed"))
        recorded = {int(i): v for i, v in state.get("failed", {}).items()}
        assert sorted(recorded) == failed_jobs, f"failed jobs {failed_jobs}, process_failure saw {sorted(recorded)}"
        unexpected = {i: v for i, v in recorded.items() if i not in failing}
        assert not unexpected, f"jobs failed that should not have: {unexpected}"
        indexes = sorted(j.index for j in snap.jobs)
        assert len(indexes) == len(set(indexes)), "a job was enqueued twice"
        assert all(0 <= i < count for i in indexes)
        if finished:
            assert indexes == list(range(count)), f"jobs missing: {sorted(set(range(count)) - set(indexes))}"
            assert sorted(recorded) == sorted(failing), f"expected {sorted(failing)} to fail, failed: {recorded}"
            for i, text in failing.items():
                failure = recorded[i]
                assert text.lower() in f"{failure['type']}: {failure['message']}".lower(), (
                    f"job {i} failed with {failure}, expected {text!r} in it"
                )

    @staticmethod
    def _acked_results_are_stored(snap: Snapshot, acked: Iterable[tuple[int, int]]) -> None:
        rows = {j.id: j for j in snap.jobs}
        for job_id, lease_no in acked:
            row = rows.get(job_id)
            assert row is not None and row.status in ("succeeded", "processed") and row.lease_no == lease_no, (
                f"the server accepted a result for job {job_id} lease {lease_no}, but the store has {row}"
            )

    @staticmethod
    def worker_caches_are_whole(workers: Iterable[Process]) -> None:
        """No partial file in the cache of a worker that stopped cleanly.

        A running worker may be mid-fetch (one just thawed from SIGSTOP still
        fetches for a job it lost); a killed one leaves its leftovers for its
        next start to clean."""
        for worker in workers:
            if worker.popen.returncode != 0:
                continue
            cache = worker.log_path.parent.parent / "cache" / worker.name
            if cache.is_dir():
                partial = [p for p in cache.rglob("*") if p.name.startswith(_WORKER_TEMP_PREFIXES)]
                assert not partial, f"partial files in {worker.name}'s cache: {partial}"

    def _server_is_healthy(self, server: ServerProcess) -> None:
        assert server.alive(), f"the server exited with {server.popen.returncode}"
        with sync_channel(server.address, ClientSecurity()) as channel:  # health is open
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        base = self.baseline
        assert base is not None and base.pid == server.popen.pid, "call warmed_up() once the server has warmed up"
        now = vitals(server.popen.pid)
        assert now.rss_kb <= RSS_FACTOR * base.rss_kb, f"server RSS grew from {base.rss_kb} kB to {now.rss_kb} kB"
        assert now.fds <= base.fds + FD_SLACK, f"server open fds grew from {base.fds} to {now.fds}"
