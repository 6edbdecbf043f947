"""Job operations, each a function of a Connection run by the group-commit writer.

The store is the durable copy of the lease table (server/leases.py). Every
change of a job's lease state is a compare-and-set on (status, lease_no), and
a result also on the worker that holds the lease, so the store itself fences
stale writers: a second server on the same store could not make two leases of
one job count. ``attempts`` counts the attempts charged: a result, or a lease
lost after it started; a lease is not an attempt until then.

Attempt history: an attempt that does not end its job (an error that is
retried, a lease lost after it started) is copied into ``job_attempts`` by
the same transaction, and by the same compare-and-set, as the write that ends
it (an INSERT ... SELECT from the job's row as it still is). The attempt that
ends the job, or runs now, stays in the ``jobs`` row: a job that succeeds at
once costs no extra row.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Text, bindparam, func, literal_column, select, update

from netdist.errors import ResultsNotStoredError
from netdist.server.host_protocol import StoredResult
from netdist.server.lease_model import EXTRA_KEPT_CHARS, Lease, ReadyJob, Ref, Requeue, Settlement
from netdist.server.states import JobStatus
from netdist.server.store.rows_at_once import RowsSql, rows_at_once
from netdist.server.store.rows_at_once import many as _many  # the driver's executemany, for the other writes
from netdist.server.store.schema import counters, handlers, jobs, pruned_run_time

_DONE = (JobStatus.SUCCEEDED, JobStatus.ERRORED, JobStatus.PROCESSED, JobStatus.FAILED)

INPUT_APART_CHARS = 4096
"""A job's input this long or longer is kept in ``job_inputs``, its ``jobs`` row holding ``""`` (no
input is empty: it is JSON text). The row changes size with each lease and result, and SQLite then
writes it anew, with whatever it holds."""
_INPUT_SQL = (
    "CASE WHEN jobs.input = '' THEN COALESCE((SELECT i.input FROM job_inputs AS i WHERE i.job_id = jobs.id), '')"
    " ELSE jobs.input END"
)
INPUT = literal_column(_INPUT_SQL, Text).label("input")
"""A job's input, wherever it is kept: read in ``job_inputs`` only for the rows that point there. The
same SQL in the driver-level read of results (``store_settlements``) and in SQLAlchemy's selects."""
JOB_COLUMNS = [INPUT if c.name == "input" else c for c in jobs.c]
"""Every column of ``jobs``, the input read wherever it is kept."""
_SHORT_EXTRA = literal_column(f"CASE WHEN length(jobs.extra) <= {EXTRA_KEPT_CHARS} THEN jobs.extra END", Text).label(
    "extra"
)
"""A job's extra when it is short enough to go along with the job in memory (lease_model.short_extra), else NULL."""
_IDS_PER_READ = 500

writer_seq = itertools.count(1)
"""Numbers result writes and reads of unprocessed results in the order they run: only the writer
thread runs them, one after the other, so a read sees every result write numbered below it
(server/result_inbox.py)."""

# The statements run once per job go straight to the driver's executemany:
# SQLAlchemy's per-row parameter processing was the largest cost left on the
# writer thread. Written with "?" and adapted to the driver.
_INSERT_SQL = (
    "INSERT INTO jobs (id, handler_id, status, input, extra, attempts, lease_no) VALUES (?, ?, 'available', ?, ?, 0, 0)"
)
_LEASE_SQL = (  # below, not at, the number before: a lease sent and never stored skipped one
    "UPDATE jobs SET status = 'leased', lease_no = ?, worker_id = ?, leased_at = ?"
    " WHERE id = ? AND status = 'available' AND lease_no < ?"
)
# A lease is current in the store when its row shows it (leased at that number, by that worker for a
# result), or when it is held lazily: its job still available below its number (server/leases.py).
# Each write that ends a lease therefore sets the lease's number, worker and time itself.
_HELD = (
    " WHERE id = ? AND ((status = 'leased' AND lease_no = ? AND worker_id = ?)"
    " OR (status = 'available' AND lease_no < ?))"
)
_HELD_ROWS = (
    " WHERE jobs.id = v.column7 AND ((jobs.status = 'leased' AND jobs.lease_no = v.column4"
    " AND jobs.worker_id = v.column5) OR (jobs.status = 'available' AND jobs.lease_no < v.column4))"
)
_CURRENT = " WHERE id = ? AND ((status = 'leased' AND lease_no = ?) OR (status = 'available' AND lease_no < ?))"
_LEASE_COLUMNS = "lease_no = ?, worker_id = ?, leased_at = COALESCE(?, leased_at)"
_SUCCEED_SQL = (
    "UPDATE jobs SET status = 'succeeded', output = ?, error_json = NULL, duration_seconds = ?, finished_at = ?,"
    " attempts = attempts + 1, " + _LEASE_COLUMNS + _HELD
)
# The same three as one statement per many rows, for SQLite (rows_at_once.py says why): the rows'
# values in order are v.column1, v.column2, ... ("{}" is where the VALUES rows go).
_INSERT_ROWS = RowsSql(
    _INSERT_SQL,
    "INSERT INTO jobs (id, handler_id, status, input, extra, attempts, lease_no)"
    " SELECT v.column1, v.column2, 'available', v.column3, v.column4, 0, 0 FROM (VALUES {}) AS v"
    " WHERE v.column1 IS NOT NULL",
    4,
)
_LEASE_ROWS = RowsSql(
    _LEASE_SQL,
    "UPDATE jobs SET status = 'leased', lease_no = v.column1, worker_id = v.column2, leased_at = v.column3"
    " FROM (VALUES {}) AS v WHERE jobs.id = v.column4 AND jobs.status = 'available' AND jobs.lease_no < v.column5",
    5,
)
_SUCCEED_ROWS = RowsSql(  # a row's last three values repeat three before them: the one-row form's "?" take them
    _SUCCEED_SQL,
    "UPDATE jobs SET status = 'succeeded', output = v.column1, error_json = NULL, duration_seconds = v.column2,"
    " finished_at = v.column3, attempts = jobs.attempts + 1, lease_no = v.column4, worker_id = v.column5,"
    " leased_at = COALESCE(v.column6, jobs.leased_at) FROM (VALUES {}) AS v" + _HELD_ROWS,
    10,
)
_ERRORED_SQL = (
    "UPDATE jobs SET status = 'errored', error_json = ?, duration_seconds = ?, finished_at = ?,"
    " attempts = attempts + 1, " + _LEASE_COLUMNS + _HELD
)
_RETRY_SQL = (  # a new lease number, so that no lease still in flight can take it
    "UPDATE jobs SET status = 'available', error_json = ?, duration_seconds = ?, finished_at = ?,"
    " attempts = attempts + 1, " + _LEASE_COLUMNS + _HELD
)
_REQUEUE_SQL = (
    "UPDATE jobs SET status = 'available', error_json = ?, finished_at = ?, attempts = attempts + ?, "
    + _LEASE_COLUMNS
    + _CURRENT
)
_DEAD_SQL = (
    "UPDATE jobs SET status = 'errored', error_json = ?, finished_at = ?, attempts = attempts + 1,"
    " duration_seconds = NULL, " + _LEASE_COLUMNS + _CURRENT
)
_ATTEMPT_SQL = (  # run before the write that ends the lease, under the same condition
    "INSERT INTO job_attempts (job_id, handler_id, lease_no, attempt, charged, outcome, worker_id, started_at,"
    " finished_at, duration_seconds, error_type, error_message, error_traceback)"
    " SELECT id, handler_id, CAST(? AS INTEGER), attempts + 1, CAST(? AS BOOLEAN), CAST(? AS VARCHAR(10)),"
    " CAST(? AS VARCHAR(64)), COALESCE(CAST(? AS DOUBLE PRECISION), leased_at),"
    " CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT)"
    " FROM jobs"
)
_STREAK_SQL = "UPDATE handlers SET sequenced_errors = ? WHERE id = ?"
_SAVE_HANDLER_SQL = "UPDATE handlers SET handler_state_json = ?, summary = ?, total = ? WHERE id = ?"


def _in_chunks(conn: Connection, sql: str, before: Sequence[object], ids: Sequence[int]) -> Iterable[Any]:
    """Run ``sql`` (ending in ``IN ({})``, with ``?`` placeholders) at the driver once per
    _IDS_PER_READ of ``ids``, ``before`` bound ahead of them; yields each run's result. An IN list
    built by SQLAlchemy is compiled anew for every length, which the hot path paid per call."""
    for start in range(0, len(ids), _IDS_PER_READ):
        chunk = tuple(ids[start : start + _IDS_PER_READ])
        text = sql.format(", ".join("?" * len(chunk)))
        if conn.dialect.paramstyle != "qmark":
            text = text.replace("?", "%s")
        yield conn.exec_driver_sql(text, (*before, *chunk))


def _error_columns(error: Mapping[str, str]) -> tuple[str, str, str]:
    return (str(error.get("type", "")), str(error.get("message", "")), str(error.get("traceback", "")))


def _all_changed(conn: Connection, changed: int, wanted: int) -> bool:
    """Whether an executemany changed every row (where the driver can tell)."""
    return changed == wanted and conn.dialect.supports_sane_multi_rowcount


_ROWS = select(
    jobs.c.id,
    jobs.c.status,
    jobs.c.lease_no,
    jobs.c.worker_id,
    jobs.c.leased_at,
    jobs.c.finished_at,
).where(jobs.c.id.in_(bindparam("ids", expanding=True)))


def _rows(conn: Connection, ids: Iterable[int]) -> dict[int, Any]:
    return {r.id: r for r in conn.execute(_ROWS, {"ids": sorted(set(ids))})}


def reserve_job_ids(conn: Connection, count: int) -> range:
    """The next ``count`` job ids, never handed out before nor again (server/job_ids.py says why)."""
    end = conn.execute(
        update(counters)
        .where(counters.c.name == "next_job_id")
        .values(value=counters.c.value + count)
        .returning(counters.c.value)
    ).scalar_one()
    return range(end - count, end)


def insert(conn: Connection, handler_id: str, ids: Sequence[int], items: Sequence[tuple[str, str]]) -> int:
    """New jobs, available, under ids from :func:`reserve_job_ids` (one per item)."""
    if len(ids) != len(items):
        raise ValueError(f"{len(items)} jobs with {len(ids)} ids")
    if items:
        rows = [(job_id, handler_id, i, e) for job_id, (i, e) in zip(ids, items, strict=True)]
        apart = [(job_id, i) for job_id, _, i, _ in rows if len(i) >= INPUT_APART_CHARS]
        if apart:
            _many(conn, "INSERT INTO job_inputs (job_id, input) VALUES (?, ?)", apart)
            rows = [(job_id, h, "" if len(i) >= INPUT_APART_CHARS else i, e) for job_id, h, i, e in rows]
        rows_at_once(conn, _INSERT_ROWS, rows)
    return len(items)


def skip_unstored_leases(conn: Connection) -> int:
    """At start, before any lease: raise the lease number of every available job by one.

    A lease may go to its worker before its commit (server/leases.py), at the job's stored
    number plus one, and a server killed in between leaves it out there, unstored; this makes
    sure no number such a lease carried is handed out again. Returns the jobs raised."""
    return int(
        conn.execute(
            update(jobs).where(jobs.c.status == JobStatus.AVAILABLE).values(lease_no=jobs.c.lease_no + 1)
        ).rowcount
    )


def load_available(conn: Connection, handler_id: str, after_id: int, limit: int) -> list[ReadyJob]:
    """Available jobs after ``after_id``, oldest first, each with its extra when it is short."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.lease_no, jobs.c.attempts, INPUT, _SHORT_EXTRA)
        .where(jobs.c.handler_id == handler_id, jobs.c.status == JobStatus.AVAILABLE, jobs.c.id > after_id)
        .order_by(jobs.c.id)
        .limit(limit)
    ).all()
    return [
        ReadyJob(job_id, lease_no, attempts, text.encode(), True, extra)
        for job_id, lease_no, attempts, text, extra in rows
    ]


def lease(conn: Connection, leases: Sequence[Lease]) -> set[int]:
    """Store new leases, each only if its job is still available at a lower lease number.
    Returns the job ids leased. Only when some row did not match does it read back which did."""
    if not leases:
        return set()
    rows = [(x.lease_no, x.worker_id, x.leased_at, x.job_id, x.lease_no) for x in leases]
    if _all_changed(conn, rows_at_once(conn, _LEASE_ROWS, rows), len(rows)):
        return {x.job_id for x in leases}
    found = _rows(conn, (x.job_id for x in leases))
    return {
        x.job_id
        for x in leases
        if (r := found.get(x.job_id)) is not None
        and r.status == JobStatus.LEASED
        and r.lease_no == x.lease_no
        and r.worker_id == x.worker_id
        and r.leased_at == x.leased_at
    }


def store_results(conn: Connection, settlements: Sequence[Settlement], at: float) -> set[int]:
    """Store accepted results, each only for the current lease held by its worker.
    Returns the job ids stored."""
    succeeded: list[tuple[object, ...]] = []
    errored: list[tuple[object, ...]] = []
    retried: list[tuple[object, ...]] = []
    history: list[tuple[object, ...]] = []
    succeeded_ = JobStatus.SUCCEEDED  # read once: see server/states.py
    for s in settlements:
        r = s.result
        if s.status == succeeded_:  # the usual row, made in one go: this runs for every job
            lease_no, worker_id = r.lease_no, s.worker_id
            succeeded.append(
                (
                    r.output,
                    r.duration_seconds,
                    at,
                    lease_no,
                    worker_id,
                    s.leased_at,
                    r.job_id,
                    lease_no,
                    worker_id,
                    lease_no,
                )
            )
            continue
        lease = (r.lease_no, s.worker_id, s.leased_at)
        held = (r.job_id, r.lease_no, s.worker_id, r.lease_no)
        error = dict(r.error or {})
        failed = (json.dumps(error), r.duration_seconds, at)
        if s.status == JobStatus.ERRORED:
            errored.append((*failed, *lease, *held))
        else:
            retried.append((*failed, r.lease_no + 1, *lease[1:], *held))
            history.append(
                (*lease[:1], True, "errored", *lease[1:], at, r.duration_seconds, *_error_columns(error), *held)
            )
    if history:
        _many(conn, _ATTEMPT_SQL + _HELD, history)
    wanted = len(succeeded) + len(errored) + len(retried)
    changed = rows_at_once(conn, _SUCCEED_ROWS, succeeded) if succeeded else 0
    changed += sum(_many(conn, sql, rows) for sql, rows in ((_ERRORED_SQL, errored), (_RETRY_SQL, retried)) if rows)
    if _all_changed(conn, changed, wanted):
        return {s.result.job_id for s in settlements}
    found = _rows(conn, (s.result.job_id for s in settlements))
    stored = set()
    for s in settlements:
        row = found.get(s.result.job_id)
        lease_no = s.result.lease_no + (1 if s.status == JobStatus.AVAILABLE else 0)
        if row is not None and row.status == s.status and row.lease_no == lease_no and row.finished_at == at:
            stored.add(s.result.job_id)
    return stored


def requeue(conn: Connection, requeues: Sequence[Requeue], at: float) -> set[int]:
    """End leases without a result: the job is available again at the next lease number
    (an attempt charged if the lease had started), or errored when out of attempts."""
    history: list[tuple[object, ...]] = [
        (q.lease_no, q.charged, "lost", q.worker_id, q.leased_at, at, None, *_error_columns(q.error), *_current(q))
        for q in requeues
        if not q.final and (q.charged or q.started)
    ]
    if history:
        _many(conn, _ATTEMPT_SQL + _CURRENT, history)
    back: list[tuple[object, ...]] = [
        (json.dumps(dict(q.error)), at, int(q.charged), q.lease_no + 1, q.worker_id, q.leased_at, *_current(q))
        for q in requeues
        if not q.final
    ]
    dead: list[tuple[object, ...]] = [
        (json.dumps(dict(q.error)), at, q.lease_no, q.worker_id, q.leased_at, *_current(q)) for q in requeues if q.final
    ]
    changed = sum(_many(conn, sql, rows) for sql, rows in ((_REQUEUE_SQL, back), (_DEAD_SQL, dead)) if rows)
    if _all_changed(conn, changed, len(requeues)):
        return {q.job_id for q in requeues}
    found = _rows(conn, (q.job_id for q in requeues))
    return {
        q.job_id
        for q in requeues
        if (r := found.get(q.job_id)) is not None
        and r.finished_at == at
        and (r.status, r.lease_no)
        == ((JobStatus.ERRORED, q.lease_no) if q.final else (JobStatus.AVAILABLE, q.lease_no + 1))
    }


def _current(q: Requeue) -> tuple[object, ...]:
    """The values of _CURRENT for a requeue."""
    return (q.job_id, q.lease_no, q.lease_no)


def store_streaks(conn: Connection, streaks: Mapping[str, int]) -> None:
    """Failed results in a row per handler, as the lease table counted them."""
    if streaks:
        _many(conn, _STREAK_SQL, [(n, h) for h, n in streaks.items()])


class StoredSettlements(NamedTuple):
    stored: set[int]
    """The job ids stored."""
    seq: int
    """The write's number (:data:`writer_seq`)."""
    succeeded: dict[str, list[StoredResult]]
    """Per handler, the results stored as succeeded, as its runtime hands them to the handler."""


def store_settlements(
    conn: Connection, settlements: Sequence[Settlement], at: float, streaks: Mapping[str, int]
) -> StoredSettlements:
    """A batch of results and the streaks they moved, in one transaction; with the succeeded ones
    read back for their handlers (server/result_inbox.py)."""
    stored = store_results(conn, settlements, at)
    store_streaks(conn, streaks)
    succeeded_ = JobStatus.SUCCEEDED  # read once: see server/states.py
    ok = [s for s in settlements if s.status == succeeded_ and s.result.job_id in stored]
    unknown = [s.result.job_id for s in ok if s.input is None or s.extra is None]  # the lease did not carry them
    found: dict[int, Any] = {}
    for rows in _in_chunks(conn, f"SELECT id, {_INPUT_SQL}, extra FROM jobs WHERE id IN ({{}})", (), unknown):
        found.update((r[0], r) for r in rows)
    succeeded: dict[str, list[StoredResult]] = {}
    for s in ok:
        job_id = s.result.job_id
        if s.input is not None and s.extra is not None:
            item = StoredResult(job_id, s.input.decode(), s.result.output or "null", s.extra)
        else:
            row = found[job_id]
            item = StoredResult(job_id, row[1], s.result.output or "null", row[2])
        succeeded.setdefault(s.handler_id, []).append(item)
    return StoredSettlements(stored, next(writer_seq), succeeded)


def classify(conn: Connection, worker_id: str, refs: Collection[Ref]) -> dict[Ref, str]:
    """Why results the lease table did not accept were not accepted: 'duplicate' (this very
    result was stored before), 'stale' (not the current lease of this worker) or 'unknown'
    (no such job)."""
    found = _rows(conn, (job_id for job_id, _ in refs))
    out = {}
    for job_id, lease_no in refs:
        r = found.get(job_id)
        if r is None:
            out[(job_id, lease_no)] = "unknown"
        elif r.status in _DONE and r.lease_no == lease_no and r.worker_id == worker_id:
            out[(job_id, lease_no)] = "duplicate"
        else:
            out[(job_id, lease_no)] = "stale"
    return out


def leased(conn: Connection) -> list[Any]:
    """Every lease the store holds (to adopt after a restart): id, lease_no, handler_id,
    worker_id, attempts, input, leased_at."""
    return list(
        conn.execute(
            select(
                jobs.c.id,
                jobs.c.lease_no,
                jobs.c.handler_id,
                jobs.c.worker_id,
                jobs.c.attempts,
                INPUT,
                jobs.c.leased_at,
            ).where(jobs.c.status == JobStatus.LEASED)
        ).all()
    )


class UnprocessedJob(NamedTuple):
    """A finished job whose result (or final error) the handler has not processed yet."""

    job_id: int
    input_json: str
    outcome_json: str
    """The output (a succeeded job; ``null`` if none was stored) or the error (an errored one): JSON text."""
    extra_json: str
    attempts: int


class Unprocessed(NamedTuple):
    seq: int
    """The read's number (:data:`writer_seq`)."""
    rows: list[UnprocessedJob]


def unprocessed(conn: Connection, handler_id: str, status: JobStatus, limit: int) -> Unprocessed:
    """Results (``SUCCEEDED``) or final errors (``ERRORED``) waiting for the handler, oldest first."""
    value = jobs.c.output if status == JobStatus.SUCCEEDED else jobs.c.error_json
    rows = conn.execute(
        select(jobs.c.id, INPUT, value, jobs.c.extra, jobs.c.attempts)
        .where(jobs.c.handler_id == handler_id, jobs.c.status == status)
        .order_by(jobs.c.id)
        .limit(limit)
    ).all()
    return Unprocessed(next(writer_seq), [UnprocessedJob(r[0], r[1], r[2] or "null", r[3], r[4]) for r in rows])


def mark_processed(conn: Connection, ids: Sequence[int], status: JobStatus, was: JobStatus | None = None) -> int:
    """The handler took these results (or final errors); their outputs stay for ``jobs show``
    until retention drops them (server/retention.py). With ``was``, only rows in that status change.
    Returns how many rows changed."""
    if was is None:
        runs = _in_chunks(conn, "UPDATE jobs SET status = ? WHERE id IN ({})", (status.value,), ids)
    else:
        runs = _in_chunks(
            conn, "UPDATE jobs SET status = ? WHERE status = ? AND id IN ({})", (status.value, was.value), ids
        )
    return sum(run.rowcount for run in runs)


def counts(conn: Connection, handler_id: str | Collection[str] | None = None) -> dict[str, dict[str, int]]:
    """Jobs per status per handler: of one handler, of several, or (None) of every one."""
    if handler_id is not None and not isinstance(handler_id, str) and not handler_id:
        return {}
    stmt = select(jobs.c.handler_id, jobs.c.status, func.count()).group_by(jobs.c.handler_id, jobs.c.status)
    if isinstance(handler_id, str):
        stmt = stmt.where(jobs.c.handler_id == handler_id)
    elif handler_id is not None:
        stmt = stmt.where(jobs.c.handler_id.in_(sorted(handler_id)))
    out: dict[str, dict[str, int]] = {}
    for hid, status, n in conn.execute(stmt):
        out.setdefault(hid, {})[status] = n
    return out


class Tally(NamedTuple):
    """A handler's jobs per status as stored, and retention's tallies of those it deleted, as of one
    moment: what the lease table counts from (its shown processed and failed add the tallies)."""

    counts: dict[str, int]
    pruned: tuple[int, int]  # processed, failed


def tally(conn: Connection, handler_id: str) -> Tally:
    """One statement, so one snapshot: a retention pass committing meanwhile is in both or neither."""
    rows = conn.execute(
        select(jobs.c.status, func.count(jobs.c.id), handlers.c.pruned_processed, handlers.c.pruned_failed)
        .select_from(handlers.outerjoin(jobs, jobs.c.handler_id == handlers.c.id))
        .where(handlers.c.id == handler_id)
        .group_by(jobs.c.status, handlers.c.pruned_processed, handlers.c.pruned_failed)
    ).all()
    found = {status: n for status, n, _, _ in rows if status is not None}
    return Tally(found, (rows[0][2], rows[0][3]) if rows else (0, 0))


def record_batch(
    conn: Connection,
    handler_id: str,
    *,
    processed: Sequence[int],
    processed_status: JobStatus,
    invalid: Sequence[int],
    new_jobs: Sequence[tuple[str, str]],
    new_ids: Sequence[int],
    handler_state: str,
    summary: str,
    total: int | None,
    refill_after: int | None = None,
    refill_limit: int = 0,
    handed: JobStatus | None = None,
) -> list[ReadyJob]:
    """What one call of the handler host did, in one transaction: results
    processed, jobs enqueued, the handler's state saved. With ``refill_after``
    (the lease table's cursor), the available jobs after it are read back in the
    same transaction, the new ones among them, so that they are leased without a
    trip of their own through the writer.

    ``handed``: the status the results were handed to the handler in. Each must be stored so (by a
    write before this one) or the call is not saved: ResultsNotStoredError. A handler gets results
    before their write commits (server/result_inbox.py), and what it did with them is written behind
    that write without waiting for it; this keeps it from counting if the results did not.

    ``invalid``: of ``processed``, the results whose output the handler could not read (not JSON); they
    fail. An id there that is not among ``processed``, or not this handler's, changes nothing."""
    bad = set(invalid).intersection(processed)  # the host checks this too (host.py): here, a second guard
    good = [i for i in processed if i not in bad]
    changed = mark_processed(conn, good, processed_status, handed)
    if bad:
        err = json.dumps({"type": "InvalidOutput", "message": "the worker sent output that is not JSON"})
        stmt = update(jobs).where(jobs.c.id.in_(sorted(bad)), jobs.c.handler_id == handler_id)
        if handed is not None:
            stmt = stmt.where(jobs.c.status == handed)
        changed += conn.execute(stmt.values(status=JobStatus.FAILED, error_json=err, output=None)).rowcount
    wanted = len(set(good)) + len(bad)  # rows, each changed once however often it is named
    if handed is not None and changed != wanted:
        raise ResultsNotStoredError(
            f"results handed to the handler were not stored: {wanted - changed} of {wanted} are not "
            f"{handed.value} in the store"
        )
    insert(conn, handler_id, new_ids, new_jobs)
    _many(conn, _SAVE_HANDLER_SQL, [(handler_state, summary[:2000], total, handler_id)])
    return [] if refill_after is None else load_available(conn, handler_id, refill_after, refill_limit)


def listing(conn: Connection, handler_id: str | None, status: str, limit: int) -> list[Any]:
    stmt = select(*JOB_COLUMNS).where(jobs.c.status == status).order_by(jobs.c.id.desc()).limit(limit)
    if handler_id is not None:
        stmt = stmt.where(jobs.c.handler_id == handler_id)
    return list(conn.execute(stmt).all())


def available_refs(
    conn: Connection, handler_id: str | None, limit: int, *, before_id: int | None = None
) -> list[tuple[int, int]]:
    """(id, lease number) of up to ``limit`` available jobs, newest first; with ``before_id``, only older
    ones (the next page). No input is read: most of a page may be jobs held lazily, left out after."""
    stmt = select(jobs.c.id, jobs.c.lease_no).where(jobs.c.status == JobStatus.AVAILABLE)
    if handler_id is not None:
        stmt = stmt.where(jobs.c.handler_id == handler_id)
    if before_id is not None:
        stmt = stmt.where(jobs.c.id < before_id)
    return [(r.id, r.lease_no) for r in conn.execute(stmt.order_by(jobs.c.id.desc()).limit(limit))]


def listed_rows(conn: Connection, ids: Sequence[int]) -> list[Any]:
    """The jobs ``ids`` (every column, the input wherever it is kept), newest first."""
    if not ids:
        return []
    return list(conn.execute(select(*JOB_COLUMNS).where(jobs.c.id.in_(ids)).order_by(jobs.c.id.desc())).all())


def run_time_since(conn: Connection, since: float) -> dict[tuple[str, str], float]:
    """Seconds of job run time per (worker, handler) in results stored since ``since`` (a day's start),
    with that of the jobs retention deleted since (``pruned_run_time``, store/pruning.py)."""
    rows = conn.execute(
        select(jobs.c.worker_id, jobs.c.handler_id, func.sum(jobs.c.duration_seconds))
        .where(jobs.c.finished_at >= since, jobs.c.worker_id.is_not(None), jobs.c.duration_seconds.is_not(None))
        .group_by(jobs.c.worker_id, jobs.c.handler_id)
    ).all()
    pruned = conn.execute(
        select(pruned_run_time.c.worker_id, pruned_run_time.c.handler_id, func.sum(pruned_run_time.c.seconds))
        .where(pruned_run_time.c.day_start >= since)
        .group_by(pruned_run_time.c.worker_id, pruned_run_time.c.handler_id)
    ).all()
    found: dict[tuple[str, str], float] = {}
    for worker_id, handler_id, seconds in [*rows, *pruned]:
        found[(worker_id, handler_id)] = found.get((worker_id, handler_id), 0.0) + float(seconds or 0.0)
    return found
