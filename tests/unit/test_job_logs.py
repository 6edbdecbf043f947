"""Job log lines, piece by piece: the child's bounded gate, the line it writes, the worker's batches,
and the store's fenced, bounded append (a real SQLite file and PostgreSQL database)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select

from netdist.server.store import job_logs
from netdist.server.store.engine import open_engine
from netdist.server.store.job_logs import JobLogIn
from netdist.server.store.schema import job_log, jobs
from netdist.wire import JOB_LOG_BATCH_BYTES, MAX_JOB_LOG_CHARS, MAX_JOB_LOG_LINE_CHARS, MAX_JOB_LOG_LINES
from netdist.worker.child_protocol import JobLogged, decode_from_child
from netdist.worker.child_reports import LogGate
from netdist.worker.job import JobLog, JobRef
from netdist.worker.stream_messages import log_batches


def decoded(line: bytes | None) -> JobLogged:
    assert line is not None and line.endswith(b"\n")
    message = decode_from_child(line[:-1])
    assert isinstance(message, JobLogged)
    return message


def test_the_gate_keeps_a_lease_to_the_bound_and_counts_the_rest() -> None:
    gate = LogGate(interval_seconds=3600)
    assert gate.add(1.0, "INFO", "before any job") is False and gate.take_final() is None
    gate.start((7, 2))
    assert gate.add(1.0, "INFO", "first") is True  # the first waiting line wakes the writer thread
    assert gate.take_due() is None  # not due yet: the interval has not passed
    for n in range(MAX_JOB_LOG_LINES + 50):
        gate.add(2.0, "WARNING", f"line {n}")
    sent = decoded(gate.take_due())  # a drop is due at once: the worker hears of it
    assert (sent.job_id, sent.lease_no) == (7, 2)
    assert sent.lines[0] == (1.0, "INFO", "first") and len(sent.lines) == MAX_JOB_LOG_LINES
    assert sent.dropped == 51
    gate.add(3.0, "INFO", "short")  # once cut, cut for good
    final = decoded(gate.take_final())
    assert (final.lines, final.dropped) == ((), 1)
    gate.start((8, 1))  # a new lease starts from nothing
    gate.add(4.0, "INFO", "x" * (MAX_JOB_LOG_LINE_CHARS + 10))
    fit = MAX_JOB_LOG_CHARS // MAX_JOB_LOG_LINE_CHARS  # long lines: the characters bound comes first
    for _ in range(fit + 9):
        gate.add(4.0, "INFO", "y" * MAX_JOB_LOG_LINE_CHARS)
    final = decoded(gate.take_final())
    assert len(final.lines) == fit and final.dropped == 10
    assert final.lines[0][2] == "x" * (MAX_JOB_LOG_LINE_CHARS - 1) + "…"
    assert gate.take_final() is None


def test_a_log_line_from_the_child_round_trips_and_bad_ones_are_named() -> None:
    line = JobLogged(3, 4, ((1.5, "ERROR", 'multi\nline "quoted" \x1b[2J'),), 2).encode()
    assert decoded(line) == JobLogged(3, 4, ((1.5, "ERROR", 'multi\nline "quoted" \x1b[2J'),), 2)
    bad = json.dumps({"logs": {"job_id": 1, "lease_no": 1, "lines": [[1, 2, "x"]], "dropped": 0}}).encode()
    with pytest.raises(ValueError, match="'lines' must hold"):
        decode_from_child(bad)


def test_worker_batches_stay_under_the_size_and_keep_each_jobs_lines_in_order() -> None:
    text = "z" * MAX_JOB_LOG_LINE_CHARS
    many = JobLog(JobRef(1, 1), tuple((float(n), "INFO", f"{n}{text}") for n in range(100)), 3)
    small = JobLog(JobRef(2, 1), ((0.0, "INFO", "one"),), 0)
    batches = list(log_batches([many, small]))
    assert len(batches) > 1 and all(b.ByteSize() <= JOB_LOG_BATCH_BYTES for b in batches)
    items = [item for b in batches for item in b.items]
    got = [line.text for item in items if item.ref.job_id == 1 for line in item.lines]
    assert got == [f"{n}{text}"[:MAX_JOB_LOG_LINE_CHARS] for n in range(100)]
    assert [item.dropped for item in items if item.ref.job_id == 1][-1] == 3
    assert [(item.ref.job_id, [line.text for line in item.lines]) for item in items][-1] == (2, ["one"])


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        for job_id, status, lease_no, worker in [
            (1, "leased", 3, "w1"),
            (2, "leased", 1, "w2"),
            (3, "processed", 1, "w1"),
        ]:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    handler_id="h1",
                    status=status,
                    input="{}",
                    lease_no=lease_no,
                    worker_id=worker,
                    attempts=1,
                )
            )
    yield engine
    engine.dispose()


def rows(engine: Engine, job_id: int) -> list[tuple[int, int, str, int]]:
    with engine.connect() as conn:
        found = conn.execute(
            select(job_log.c.lease_no, job_log.c.attempt, job_log.c.text, job_log.c.dropped)
            .where(job_log.c.job_id == job_id)
            .order_by(job_log.c.id)
        ).all()
    return [(r.lease_no, r.attempt, r.text, r.dropped) for r in found]


def test_the_store_keeps_lines_only_for_the_senders_current_lease(engine: Engine) -> None:
    line = [(1.0, "INFO", "kept")]
    with engine.begin() as conn:
        kept = job_logs.append(
            conn,
            "w1",
            [
                JobLogIn(1, 3, line),
                JobLogIn(1, 2, [(1.0, "INFO", "an old lease")]),
                JobLogIn(2, 1, [(1.0, "INFO", "another worker's lease")]),
                JobLogIn(3, 1, [(1.0, "INFO", "a job with its result")]),
                JobLogIn(99, 1, [(1.0, "INFO", "no such job")]),
            ],
            5.0,
        )
    assert kept == 1
    assert rows(engine, 1) == [(3, 2, "kept", 0)]  # the attempt is the store's: attempts charged, plus one
    assert rows(engine, 2) == rows(engine, 3) == rows(engine, 99) == []


def test_the_store_cuts_a_lease_at_the_bound_with_one_marker_that_counts_on(engine: Engine) -> None:
    with engine.begin() as conn:
        lines = [(1.0, "INFO", f"line {n}") for n in range(MAX_JOB_LOG_LINES - 1)]
        assert job_logs.append(conn, "w1", [JobLogIn(1, 3, lines)], 5.0) == MAX_JOB_LOG_LINES - 1
    with engine.begin() as conn:  # a later batch: one fits, two are cut, and the worker dropped five
        more = [(2.0, "INFO", "last kept"), (2.0, "INFO", "cut"), (2.0, "INFO", "cut too")]
        assert job_logs.append(conn, "w1", [JobLogIn(1, 3, more, 5)], 6.0) == 1
    with engine.begin() as conn:  # and later still: nothing more is kept, the marker counts on
        assert job_logs.append(conn, "w1", [JobLogIn(1, 3, [(3.0, "INFO", "late")], 1)], 7.0) == 0
    stored = rows(engine, 1)
    assert len(stored) == MAX_JOB_LOG_LINES + 1
    assert stored[-2][2] == "last kept"
    assert stored[-1][3] == 9 and stored[-1][2].startswith("… 9 lines dropped")
