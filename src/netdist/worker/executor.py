"""Runs jobs in executor child processes, one per slot.

Each child is bound to one :class:`Environment`; a job for another environment
replaces an idle child with a fresh process (new code never meets old modules).
Short jobs are pipelined: a child may hold several queued jobs (about 10 ms of
work by the running average), so it never waits for the worker between jobs;
long jobs are written one at a time so none waits behind another in a child
while a slot elsewhere is free. What the worker writes to a child in one turn
of the event loop leaves in one write; what a child writes is read in chunks.
Job inputs and outputs pass through as JSON text, never parsed here.

A job counts as started when it is written to an idle child, or when the job
before it in its child finished (``on_started``); until then it can be handed
back without having run. A child that dies fails its running job (``WorkerChildDied``) and hands its
queued jobs back to the pending queue; a job past its timeout gets its child
killed (``JobTimeout``); a revoked job is cancelled in the child or, when it is
already running, its child is killed, and it produces no result.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable

from netdist.parent_death import child_args
from netdist.worker.job import (
    Environment,
    Job,
    JobError,
    JobProgress,
    JobRef,
    JobResult,
)

log = logging.getLogger(__name__)

PIPELINE_SECONDS = 0.01
"""Queue about this much work into a busy child."""
MAX_PIPELINE_DEPTH = 16
REVOKE_KILL_DELAY_SECONDS = 0.5
"""A cancelled job that started anyway (a race) is stopped by killing its child after this."""
LOAD_ALLOWANCE_SECONDS = 60.0
"""A child still importing the job script this long after it started counts against the timeout."""
WATCHDOG_INTERVAL_SECONDS = 0.05
EWMA_ALPHA = 0.2
_STREAM_LIMIT = 1 << 30
_READ_SIZE = 1 << 16
_OUTPUT_PREFIX = b"="
"""Starts the line of a job's output: ``= JOB_ID LEASE_NO DURATION OUTPUT`` (see child.py)."""

ResultCallback = Callable[[JobResult], None]
ProgressCallback = Callable[[JobProgress], None]
StartedCallback = Callable[[JobRef], None]


def input_line(raw: bytes) -> bytes:
    """A job's input (JSON text) as one line for the child.

    As is, unparsed, unless it holds a newline byte (whitespace in JSON text):
    then it is re-encoded, raising ValueError if it is not JSON. The child
    parses the input and reports ``InputNotJson`` for the rest.
    """
    if not raw:
        return b"null"
    if b"\n" in raw:
        return json.dumps(json.loads(raw)).encode()
    return raw


@dataclasses.dataclass(slots=True)
class _Entry:
    """A job written (or about to be written) to a child."""

    job: Job
    revoked: bool = False
    cancel_sent_at: float | None = None


class _Child:
    """One executor child process and the jobs queued in it, in order."""

    def __init__(self, executor: Executor, environment: Environment) -> None:
        self.executor = executor
        self.environment = environment
        self.entries: collections.deque[_Entry] = collections.deque()
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.head_started_at: float | None = None
        self.kill_reason: str | None = None
        self.gone = False
        self.created_at = time.monotonic()
        self.revoked = 0
        """Entries marked revoked (still queued until the child answers or dies)."""
        self._loop = asyncio.get_running_loop()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        init: dict[str, object] = {
            "script": str(environment.script_path),
            "paths": [str(p) for p in environment.wheel_dirs],
        }
        if executor.max_memory_bytes is not None:
            init["max_memory_bytes"] = executor.max_memory_bytes
        self._write(json.dumps({"init": init}).encode() + b"\n")
        self.task = self._loop.create_task(self._run(), name="netdist-child")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def load(self) -> int:
        """Jobs in this child that still count (not revoked)."""
        return len(self.entries) - self.revoked

    def add(self, job: Job) -> None:
        first = not self.entries
        if first and self.ready:
            self.head_started_at = time.monotonic()
        self.entries.append(_Entry(job=job))
        if first:
            self.executor._job_started(job.ref)
        ref = job.ref
        names = f"{json.dumps(job.handler_id)},{json.dumps(job.job_name)}"
        header = f"[{ref.job_id},{ref.lease_no},{job.attempt},{names}]\n"
        self._write(header.encode() + job.input_json + b"\n")

    def mark_revoked(self, entry: _Entry) -> None:
        if not entry.revoked:
            entry.revoked = True
            self.revoked += 1

    def cancel(self, entry: _Entry) -> None:
        self.mark_revoked(entry)
        entry.cancel_sent_at = time.monotonic()
        ref = entry.job.ref
        self._write(json.dumps({"cancel": [ref.job_id, ref.lease_no]}).encode() + b"\n")

    def kill(self, reason: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def _write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in this turn of the loop leaves in one write."""
        self._outbox.append(data)
        if self.proc is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.proc is None or not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    async def _run(self) -> None:
        returncode: int | None = None
        try:
            # Forked on the event loop (the main thread): the child's PDEATHSIG
            # fires when that thread ends (netdist.parent_death).
            self.proc = await asyncio.create_subprocess_exec(
                self.executor.python,
                "-m",
                "netdist.worker.child",
                *child_args(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=_STREAM_LIMIT,
            )
            if self.kill_reason is not None:
                self.proc.kill()
            self._flush()
            assert self.proc.stdout is not None
            await self._read(self.proc.stdout)
            returncode = await self.proc.wait()
        except asyncio.CancelledError:
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
            raise
        except Exception as exc:
            log.error("executor child failed: %s: %s", type(exc).__name__, exc)
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                returncode = await self.proc.wait()
        finally:
            self.gone = True
        self.executor._child_exited(self, returncode)

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        """Handle each line the child writes, reading whatever it wrote at once."""
        partial: list[bytes] = []  # the start of a line that is not complete yet
        while chunk := await stdout.read(_READ_SIZE):
            if b"\n" not in chunk:
                partial.append(chunk)
                continue
            if partial:
                partial.append(chunk)
                chunk = b"".join(partial)
                partial.clear()
            lines = chunk.split(b"\n")
            tail = lines.pop()
            for line in lines:
                if line.startswith(_OUTPUT_PREFIX):
                    self._finish_output(line)
                else:
                    self._handle(json.loads(line))
            if tail:
                partial.append(tail)

    def _handle(self, message: dict[str, object]) -> None:
        progress = message.get("progress")
        if isinstance(progress, dict):
            self.executor._child_progress(self, progress)
        elif message.get("ready"):
            self.ready = True
            if self.entries:
                self.head_started_at = time.monotonic()
        elif "job_id" in message:
            self._finish(message)

    def _pop(self, ref: JobRef) -> _Entry | None:
        """The head entry, which the child answered; None (and the child killed) if not."""
        entries = self.entries
        if not entries or entries[0].job.ref != ref:
            log.error("executor child answered job %s out of order; replacing it", ref)
            self.kill("protocol")
            return None
        entry = entries.popleft()
        self.head_started_at = time.monotonic() if entries else None
        if entry.revoked:
            self.revoked -= 1
        if entries and not entries[0].revoked:
            self.executor._job_started(entries[0].job.ref)
        return entry

    def _finish_output(self, line: bytes) -> None:
        """``= JOB_ID LEASE_NO DURATION OUTPUT``: the output goes on as the child encoded it."""
        _, job_id, lease_no, duration, output = line.split(b" ", 4)
        entry = self._pop(JobRef(int(job_id), int(lease_no)))
        if entry is None:
            return
        if entry.revoked:
            self.executor._slot_freed()
            return
        result = JobResult(
            ref=entry.job.ref, output_json=output, duration_seconds=float(duration)
        )
        self.executor._job_finished(result)

    def _finish(self, message: dict[str, object]) -> None:
        ref = JobRef(job_id=int(message["job_id"]), lease_no=int(message["lease_no"]))  # type: ignore[call-overload]
        entry = self._pop(ref)
        if entry is None:
            return
        if message.get("skipped") or entry.revoked:
            self.executor._slot_freed()
            return
        duration = float(message.get("duration_seconds", 0.0))  # type: ignore[arg-type]
        error = message.get("error")
        if isinstance(error, dict):
            job_error = JobError(
                type=str(error.get("type", "Exception")),
                message=str(error.get("message", "")),
                traceback=str(error.get("traceback", "")),
            )
        else:  # an error line always names one; keep a failure a failure
            job_error = JobError(type="Exception", message="no error given")
        result = JobResult(ref=ref, error=job_error, duration_seconds=duration)
        self.executor._job_finished(result)


class Executor:
    """Runs jobs in ``slots`` child processes; reports through callbacks."""

    def __init__(
        self,
        *,
        slots: int,
        on_result: ResultCallback,
        on_progress: ProgressCallback | None = None,
        on_started: StartedCallback | None = None,
        python: str = sys.executable,
        max_memory_bytes: int | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.python = python
        self._on_result = on_result
        self._on_progress = on_progress
        self._on_started = on_started
        self.max_memory_bytes = max_memory_bytes
        """Each child limits its own data size (RLIMIT_DATA) to this; None: no limit."""
        self._pending: collections.deque[Job] = collections.deque()
        self._children: list[_Child | None] = [None] * slots
        self._retired: set[_Child] = set()
        self._ewma: float | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    # -- public ----------------------------------------------------------

    @property
    def ewma_seconds(self) -> float | None:
        """Running average of job durations (None before the first job finished)."""
        return self._ewma

    @property
    def running(self) -> int:
        """Jobs in children (running or queued there)."""
        return sum(len(c.entries) for c in self._children if c is not None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def child_pids(self) -> list[int]:
        return [
            pid for c in self._children if c is not None and (pid := c.pid) is not None
        ]

    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("executor is closed")
        self._ensure_watchdog()
        self._pending.append(job)
        self._pump()

    def revoke(self, ref: JobRef) -> bool:
        """Stop a job without a result. False if the executor does not have it."""
        for job in self._pending:
            if job.ref == ref:
                self._pending.remove(job)
                return True
        for child in self._children:
            if child is None:
                continue
            for index, entry in enumerate(child.entries):
                if entry.job.ref != ref or entry.revoked:
                    continue
                if index == 0:
                    child.mark_revoked(entry)
                    child.kill("revoked")
                else:
                    child.cancel(entry)
                return True
        return False

    def drop_unstarted(self) -> list[JobRef]:
        """Forget every job that has not started yet (for a shutdown); returns their refs."""
        dropped = [job.ref for job in self._pending]
        self._pending.clear()
        for child in self._children:
            if child is None:
                continue
            for entry in list(child.entries)[1:]:
                if not entry.revoked:
                    child.cancel(entry)
                    dropped.append(entry.job.ref)
        return dropped

    async def close(self) -> None:
        """Kill every child and wait for them."""
        self._closed = True
        self._pending.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        children = [c for c in self._children if c is not None] + list(self._retired)
        for child in children:
            child.task.cancel()
        for child in children:
            with contextlib.suppress(asyncio.CancelledError):
                await child.task
        self._children = [None] * self.slots
        self._retired.clear()

    # -- placement -------------------------------------------------------

    def _depth(self) -> int:
        if self._ewma is None or self._ewma >= PIPELINE_SECONDS:
            return 1
        if self._ewma <= 0:
            return MAX_PIPELINE_DEPTH
        return max(
            1, min(MAX_PIPELINE_DEPTH, math.floor(PIPELINE_SECONDS / self._ewma))
        )

    def _pump(self) -> None:
        if self._closed:
            return
        depth = self._depth()
        while self._pending:
            slot = self._place(self._pending[0].environment, depth)
            if slot is None:
                return
            job = self._pending.popleft()
            child = self._children[slot]
            if (
                child is None
                or child.environment.key != job.environment.key
                or child.gone
            ):
                if child is not None:
                    self._retire(child)
                child = _Child(self, job.environment)
                self._children[slot] = child
            child.add(job)

    def _place(self, environment: Environment, depth: int) -> int | None:
        idle_other: int | None = None
        idle_empty: int | None = None
        busy_match: int | None = None
        busy_load = depth
        for index, child in enumerate(self._children):
            if child is None or child.gone:
                idle_empty = index if idle_empty is None else idle_empty
            elif child.kill_reason is not None:
                continue
            elif child.environment.key == environment.key:
                if not child.entries:
                    return index
                load = child.load
                if load < busy_load:
                    busy_match, busy_load = index, load
            elif not child.entries and idle_other is None:
                idle_other = index
        for choice in (idle_empty, idle_other, busy_match):
            if choice is not None:
                return choice
        return None

    def _retire(self, child: _Child) -> None:
        child.kill("retired")
        if not child.gone:
            self._retired.add(child)

    # -- events from children --------------------------------------------

    def _job_started(self, ref: JobRef) -> None:
        if self._on_started is not None:
            self._on_started(ref)

    def _slot_freed(self) -> None:
        self._pump()

    def _job_finished(self, result: JobResult) -> None:
        duration = max(0.0, result.duration_seconds)
        self._ewma = (
            duration
            if self._ewma is None
            else self._ewma + EWMA_ALPHA * (duration - self._ewma)
        )
        self._on_result(result)
        self._pump()

    def _child_progress(self, child: _Child, item: dict[str, object]) -> None:
        if self._on_progress is None or not child.entries:
            return
        head = child.entries[0]
        if head.revoked or head.job.ref.job_id != item.get("job_id"):
            return
        percent = float(item.get("percent", 0.0))  # type: ignore[arg-type]
        self._on_progress(
            JobProgress(
                ref=head.job.ref, percent=percent, text=str(item.get("text", ""))
            )
        )

    def _child_exited(self, child: _Child, returncode: int | None) -> None:
        self._retired.discard(child)
        for slot, current in enumerate(self._children):
            if current is child:
                self._children[slot] = None
        entries = list(child.entries)
        child.entries.clear()
        child.revoked = 0
        if self._closed:
            return
        if entries:
            head, rest = entries[0], entries[1:]
            if not head.revoked:
                self._on_result(self._death_result(child, head.job, returncode))
            self._pending.extendleft(reversed([e.job for e in rest if not e.revoked]))
        self._pump()

    def _death_result(
        self, child: _Child, job: Job, returncode: int | None
    ) -> JobResult:
        elapsed = (
            0.0
            if child.head_started_at is None
            else time.monotonic() - child.head_started_at
        )
        if child.kill_reason == "timeout":
            return JobResult.failed(
                job.ref,
                "JobTimeout",
                f"the job ran longer than its timeout of {job.timeout_seconds:g} s and was killed",
                duration_seconds=elapsed,
            )
        return JobResult.failed(
            job.ref,
            "WorkerChildDied",
            f"the executor child process {_describe_exit(returncode)} while running the job",
            duration_seconds=elapsed,
        )

    # -- timeouts ----------------------------------------------------------

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name="netdist-watchdog"
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_SECONDS)
            now = time.monotonic()
            for child in self._children:
                if child is None or not child.entries or child.kill_reason is not None:
                    continue
                started = child.head_started_at
                if started is None:  # still loading the job script
                    started = child.created_at + LOAD_ALLOWANCE_SECONDS
                head = child.entries[0]
                timeout = head.job.timeout_seconds
                if head.revoked:
                    since = max(started, head.cancel_sent_at or started)
                    if now - since > REVOKE_KILL_DELAY_SECONDS:
                        child.kill("revoked")
                elif timeout > 0 and now - started > timeout:
                    log.warning(
                        "job %s exceeded its timeout of %g s; killing its child",
                        head.job.ref,
                        timeout,
                    )
                    child.kill("timeout")


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "was lost"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
