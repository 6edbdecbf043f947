"""Runs jobs in executor child processes, one per slot.

Each child is bound to one set of wheels (a package version and its
dependencies) and loads the job scripts that run on them as their jobs come
(:meth:`ChildProcess.accepts`); a job on other wheels replaces an idle child
with a fresh process (new code never meets old modules). A fresh process costs
50-100 ms, so when jobs of several environments wait (several packages' jobs
leased to one worker), a slot takes the oldest waiting job that its child can
run before one that needs a new child,
for up to :data:`SWITCH_AFTER_SECONDS`; then the oldest job goes next whatever
it needs, so no environment waits long behind another.
Short jobs are pipelined: a child may hold several queued jobs (about 40 ms of
work by the running average), so it never waits for the worker between jobs;
long jobs are written one at a time so none waits behind another in a child
while a slot elsewhere is free. Each child is a
:class:`~netdist.worker.child_process.ChildProcess`; job inputs and outputs
pass through as JSON text, never parsed here.

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
import itertools
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import TypeGuard

from netdist.stage_trace import stamp
from netdist.worker.child_process import ChildEvents, ChildProcess, spawn
from netdist.worker.job import Environment, Job, JobLog, JobProgress, JobRef, JobResult

log = logging.getLogger(__name__)

PIPELINE_SECONDS = 0.04
"""Queue about this much work into a busy child."""
MAX_PIPELINE_DEPTH = 64
"""At most this many jobs in one child. At 16 (and 10 ms), no-op jobs emptied a child's queue in a quarter
of a millisecond and it waited for the worker to refill it: 200,000 jobs on two workers ran 11% slower,
the workers using a fifth more CPU on the wake-ups (bench/README.md)."""
REVOKE_KILL_DELAY_SECONDS = 0.5
"""A cancelled job that started anyway (a race) is stopped by killing its child after this."""
LOAD_ALLOWANCE_SECONDS = 60.0
"""A child still importing a job script this long after it started on it counts against the timeout."""
WATCHDOG_INTERVAL_SECONDS = 0.05
SWITCH_AFTER_SECONDS = 0.5
"""The oldest waiting job is passed over for jobs of a running child's environment this long, at most."""
AFFINITY_SCAN = 1000
"""Waiting jobs looked through for one a running child can take."""
EWMA_ALPHA = 0.2

ResultCallback = Callable[[JobResult], None]
ProgressCallback = Callable[[JobProgress], None]
StartedCallback = Callable[[JobRef], None]
LogCallback = Callable[[JobLog], None]


class Executor:
    """Runs jobs in ``slots`` child processes; reports through callbacks."""

    def __init__(
        self,
        *,
        slots: int,
        on_result: ResultCallback,
        on_progress: ProgressCallback | None = None,
        on_started: StartedCallback | None = None,
        on_log: LogCallback | None = None,
        python: str = sys.executable,
        max_memory_bytes: int | None = None,
        capture_output: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.python = python
        self._on_result = on_result
        self._on_progress = on_progress
        self._on_started = on_started
        self._on_log = on_log
        self.capture_output = capture_output
        """Children log what jobs write to stdout and stderr too (``--capture-output``)."""
        self.max_memory_bytes = max_memory_bytes
        """Each child limits its own data size (RLIMIT_DATA) to this; None: no limit."""
        self._pending: collections.deque[Job] = collections.deque()
        self._children: list[ChildProcess | None] = [None] * slots
        self._retired: set[ChildProcess] = set()
        self._events = ChildEvents(
            started=self._job_started,
            finished=self._job_finished,
            progress=self._job_progress,
            logged=self._job_logged,
            freed=self._pump,
            exited=self._child_exited,
        )
        self._ewma: float | None = None
        self._passing_over: tuple[Job, float] | None = None
        """The oldest waiting job while jobs of running environments go before it, and since when."""
        self._watchdog: asyncio.Task[None] | None = None
        self._spare: asyncio.Task[asyncio.subprocess.Process] | None = None
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
    def idle(self) -> bool:
        """Some slot has no job: a job submitted now starts at once (if its environment fits)."""
        return any(c is None or not c.entries for c in self._children)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def child_pids(self) -> list[int]:
        return [pid for c in self._children if c is not None and (pid := c.pid) is not None]

    def warm(self) -> None:
        """Start a child process now, unless one is waiting already, for the next child to take: it
        boots (about 50-100 ms of Python start-up and imports) while the job's environment is fetched,
        instead of after. It waits for its job script on stdin; at most one waits at a time."""
        spare = self._spare
        if self._closed or (spare is not None and (not spare.done() or _running(spare))):
            return
        self._spare = asyncio.get_running_loop().create_task(spawn(self.python), name="netdist-spare-child")

    def submit(self, *jobs: Job) -> None:
        """Queue ``jobs`` (a batch of leases at once: they are placed in one pass)."""
        if self._closed:
            raise RuntimeError("executor is closed")
        self._ensure_watchdog()
        self._pending.extend(jobs)
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
        spare, self._spare = self._spare, None
        if spare is not None:  # started and never taken: ended and reaped before close returns
            with contextlib.suppress(Exception):
                proc = await spare
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
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
        """How many jobs a child may hold, from the running average of their durations (worked out once
        per placement pass)."""
        ewma = self._ewma
        if ewma is None or ewma >= PIPELINE_SECONDS:
            return 1
        if ewma <= 0:
            return MAX_PIPELINE_DEPTH
        return max(1, min(MAX_PIPELINE_DEPTH, math.floor(PIPELINE_SECONDS / ewma)))

    def _pump(self) -> None:
        """Place waiting jobs where they fit: after a batch is submitted, and once per chunk a child wrote
        (``ChildEvents.freed``), not once per finished job."""
        if self._closed or not self._pending:
            return
        depth = self._depth()
        while self._pending:
            chosen = self._choose(depth)
            if chosen is None:
                return
            index, slot = chosen
            job = self._pending[index]
            del self._pending[index]
            child = self._children[slot]
            if child is None or child.gone or not child.accepts(job.environment):
                if child is not None:
                    self._retire(child)
                child = ChildProcess(
                    job.environment,
                    self._events,
                    python=self.python,
                    max_memory_bytes=self.max_memory_bytes,
                    capture_output=self.capture_output,
                    spare=self._spare,
                )
                self._spare = None
                self._children[slot] = child
            child.add(job)

    def _choose(self, depth: int) -> tuple[int, int] | None:
        """Which waiting job goes to which slot next: (index in the queue, slot), or None."""
        head = self._pending[0]
        slot, runs = self._place(head.environment, depth)
        if slot is not None and not self._needs_child(slot, head.environment):
            self._passing_over = None
            return 0, slot
        if slot is None and runs:
            return None  # its environment's child is busy: it goes there next
        now = time.monotonic()  # the head needs a new process
        if self._passing_over is None or self._passing_over[0] is not head:
            self._passing_over = (head, now)
        if now - self._passing_over[1] < SWITCH_AFTER_SECONDS:
            open_slots = [
                (slot, child)
                for slot, child in enumerate(self._children)
                if _live(child) and (not child.entries or child.load < depth)
            ]
            if open_slots:
                for index, job in enumerate(itertools.islice(self._pending, 1, AFFINITY_SCAN), start=1):
                    for slot, child in open_slots:
                        if child.accepts(job.environment):
                            return index, slot
        if slot is None:
            return None
        self._passing_over = None
        return 0, slot

    def _needs_child(self, slot: int, environment: Environment) -> bool:
        child = self._children[slot]
        return child is None or child.gone or not child.accepts(environment)

    def _place(self, environment: Environment, depth: int) -> tuple[int | None, bool]:
        """The slot for a job of ``environment`` (None: none has room), and whether some live child can
        run its jobs (one pass over the children, for every job)."""
        idle_other: int | None = None
        idle_empty: int | None = None
        busy_match: int | None = None
        busy_load = depth
        runs = False
        for index, child in enumerate(self._children):
            if child is None or child.gone:
                idle_empty = index if idle_empty is None else idle_empty
            elif child.kill_reason is not None:
                continue
            elif child.accepts(environment):
                if not child.entries:
                    return index, True
                runs = True
                load = child.load
                if load < busy_load:
                    busy_match, busy_load = index, load
            elif not child.entries and idle_other is None:
                idle_other = index
        for choice in (idle_empty, idle_other, busy_match):
            if choice is not None:
                return choice, runs
        return None, runs

    def _retire(self, child: ChildProcess) -> None:
        child.kill("retired")
        if not child.gone:
            self._retired.add(child)

    # -- events from children --------------------------------------------

    def _job_started(self, ref: JobRef) -> None:
        stamp("job-started")
        if self._on_started is not None:
            self._on_started(ref)

    def _job_finished(self, result: JobResult) -> None:
        stamp("job-finished")
        duration = max(0.0, result.duration_seconds)
        self._ewma = duration if self._ewma is None else self._ewma + EWMA_ALPHA * (duration - self._ewma)
        self._on_result(result)  # the slot is refilled once the child's chunk is read (ChildEvents.freed)

    def _job_progress(self, progress: JobProgress) -> None:
        if self._on_progress is not None:
            self._on_progress(progress)

    def _job_logged(self, logged: JobLog) -> None:
        if self._on_log is not None:
            self._on_log(logged)

    def _child_exited(self, child: ChildProcess, returncode: int | None) -> None:
        self._retired.discard(child)
        for slot, current in enumerate(self._children):
            if current is child:
                self._children[slot] = None
        entries = child.take_entries()
        if self._closed:
            return
        if entries:
            head, rest = entries[0], entries[1:]
            if not head.revoked:
                self._on_result(child.death_result(head.job, returncode))
            self._pending.extendleft(reversed([e.job for e in rest if not e.revoked]))
        self._pump()

    # -- timeouts ----------------------------------------------------------

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="netdist-watchdog")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_SECONDS)
            now = time.monotonic()
            for child in self._children:
                if child is None or not child.entries or child.kill_reason is not None:
                    continue
                started = child.head_started_at
                if started is None:  # still loading a job script
                    started = child.loading_since + LOAD_ALLOWANCE_SECONDS
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


def _live(child: ChildProcess | None) -> TypeGuard[ChildProcess]:
    """A child that runs and is not being killed."""
    return child is not None and not child.gone and child.kill_reason is None


def _running(spare: asyncio.Task[asyncio.subprocess.Process]) -> bool:
    """A finished spawn task whose process still runs."""
    return not spare.cancelled() and spare.exception() is None and spare.result().returncode is None
