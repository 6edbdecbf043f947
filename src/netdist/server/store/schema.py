"""The tables. Schema changes go through migrations (store/migrations)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


ID64 = BigInteger().with_variant(Integer(), "sqlite")
"""Job ids and the ids of the rows kept per job: BIGINT on PostgreSQL (its INTEGER stops at 2**31 - 1,
a day and a quarter of work at 20,000 jobs a second); SQLite's INTEGER is 64-bit, and as a primary
key it stays the rowid."""


class Package(Base):
    """One uploaded version of a package: its wheel and dependency wheels."""

    __tablename__ = "packages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(100))
    wheel_json: Mapped[str] = mapped_column(Text)  # WheelInfo of the package wheel
    dependencies_json: Mapped[str] = mapped_column(Text)  # list of WheelInfo
    handlers_json: Mapped[str] = mapped_column(Text)  # {handler name: "module:attr"}
    uploaded_at: Mapped[float] = mapped_column(Float)
    current: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_by: Mapped[str] = mapped_column(String(100), default="", server_default="")  # token name


class HandlerInstance(Base):
    """One uploaded job script: a handler of a package with its settings."""

    __tablename__ = "handlers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    package: Mapped[str] = mapped_column(String(200))
    handler: Mapped[str] = mapped_column(String(200))
    job_name: Mapped[str] = mapped_column(String(400))
    script_sha256: Mapped[str] = mapped_column(String(64))
    script_source: Mapped[str] = mapped_column(Text)
    settings_json: Mapped[str] = mapped_column(Text)
    custom_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    handler_state_json: Mapped[str] = mapped_column(Text, default="{}")
    summary: Mapped[str] = mapped_column(Text, default="")
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exhausted: Mapped[bool] = mapped_column(Boolean, default=False)
    sequenced_errors: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    script_uploaded_by: Mapped[str] = mapped_column(String(100), default="", server_default="")  # token name
    script_filename: Mapped[str] = mapped_column(String(255), default="", server_default="")  # as uploaded
    # Processed and failed jobs that retention deleted: the counts shown add them back.
    pruned_processed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pruned_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The job script's dependency lock (server/deps_lock.py), "" when it has no dependencies.
    deps_lock_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    __table_args__ = (Index("ix_handlers_key", "package", "handler", "job_name", unique=True),)


class Job(Base):
    """Every job, its status and its current lease; the result until processed. Its input, or ``""``
    when the input is long and kept in ``job_inputs`` (read with ``store.jobs.INPUT``)."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(ID64, primary_key=True, autoincrement=True)
    handler_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(12))
    input: Mapped[str] = mapped_column(Text)
    extra: Mapped[str] = mapped_column(Text, default="null")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_no: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_jobs_handler_status", "handler_id", "status", "id"),)


class JobInput(Base):
    """A job's input of INPUT_APART_CHARS or more, whose ``jobs`` row holds ``""`` instead
    (store/jobs.py). The row changes size with each lease and result, and SQLite then writes
    it anew, input and all: a 1 MiB input was written again for each (a few KB now)."""

    __tablename__ = "job_inputs"
    job_id: Mapped[int] = mapped_column(ID64, primary_key=True, autoincrement=False)
    input: Mapped[str] = mapped_column(Text)


class JobAttempt(Base):
    """An attempt that did not end its job: an error that was retried, a timeout, a lost worker.
    The attempt that ended the job (and the one running now) is in its ``jobs`` row, so a job
    that succeeds at once costs no row here."""

    __tablename__ = "job_attempts"
    id: Mapped[int] = mapped_column(ID64, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ID64)
    handler_id: Mapped[str] = mapped_column(String(32), index=True)
    lease_no: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)  # the job's attempt number this lease ran as
    charged: Mapped[bool] = mapped_column(Boolean)  # whether it counted against max-attempts
    outcome: Mapped[str] = mapped_column(String(10))  # "errored" (the job raised) or "lost" (no result)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # when it was leased
    finished_at: Mapped[float] = mapped_column(Float, index=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # as the worker measured it
    error_type: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str] = mapped_column(Text)
    error_traceback: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_job_attempts_job", "job_id", "lease_no"),)


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    labels_json: Mapped[str] = mapped_column(Text, default="{}")
    slots: Mapped[int] = mapped_column(Integer, default=1)
    hostname: Mapped[str] = mapped_column(String(200), default="")
    version: Mapped[str] = mapped_column(String(50), default="")
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    connected_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_seen: Mapped[float | None] = mapped_column(Float, nullable=True)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, default=0)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The worker's own credential (sha256 of it; the value only the worker keeps), bound to its id.
    # Unconfirmed until the worker's first message after the Welcome that carried it.
    credential_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    credential_confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    # The platform it reported in Hello (netdist.platforms.Platform as JSON), "" before it reported one.
    platform_json: Mapped[str] = mapped_column(Text, default="", server_default="")


class Token(Base):
    """A bearer token by name and role; only its sha256 is stored."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LogEntry(Base):
    """Bounded log of each handler: its own lines and the server's about it."""

    __tablename__ = "handler_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    handler_id: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)


class JobLogEntry(Base):
    """A line a job logged (ctx.log), kept for the lease that was current when it came; at most
    MAX_JOB_LOG_LINES a lease, then one entry counting the lines dropped (``dropped`` > 0)."""

    __tablename__ = "job_log"
    id: Mapped[int] = mapped_column(ID64, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ID64)
    handler_id: Mapped[str] = mapped_column(String(32), index=True)
    lease_no: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (Index("ix_job_log_job", "job_id", "lease_no", "id"),)


class AuditEntry(Base):
    """One state-changing call: who (token name and role), from where, what, and how it ended."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    token_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(10))
    peer: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(400))
    outcome: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)


class CounterRow(Base):
    """Numbers the server hands out and never twice: ``next_job_id``, the first id no job has had
    (store/jobs.py ``reserve_job_ids``)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class PrunedRunTime(Base):
    """Run time of jobs that retention deleted, per handler and worker, of the day they finished in
    (``day_start``: its midnight in the server's time zone, Unix time); only the current day's is kept.
    A restarted server adds it to the run time of the jobs still stored, so that
    ``max-time-per-client-per-day`` holds whatever retention deleted (store/jobs.py ``run_time_since``)."""

    __tablename__ = "pruned_run_time"
    handler_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day_start: Mapped[float] = mapped_column(Float, primary_key=True)
    seconds: Mapped[float] = mapped_column(Float)


packages = cast(Table, Package.__table__)
handlers = cast(Table, HandlerInstance.__table__)
jobs = cast(Table, Job.__table__)
job_inputs = cast(Table, JobInput.__table__)
workers = cast(Table, Worker.__table__)
handler_log = cast(Table, LogEntry.__table__)
audit_log = cast(Table, AuditEntry.__table__)
job_log = cast(Table, JobLogEntry.__table__)
job_attempts = cast(Table, JobAttempt.__table__)
tokens = cast(Table, Token.__table__)
counters = cast(Table, CounterRow.__table__)
pruned_run_time = cast(Table, PrunedRunTime.__table__)
