"""The worker's side of one executor child process: the jobs queued in it, in order.

A child runs on one set of wheels (:attr:`~netdist.worker.job.Environment.wheels_key`) and loads
the job scripts of its jobs as they come (at most :data:`MAX_SCRIPTS`); the time a script takes to
load is not the job's (the timeout starts after it). The executor places jobs; a
:class:`ChildProcess` writes them to its child
(:mod:`netdist.worker.child_protocol`), reads what the child answers and
reports it through :class:`ChildEvents`. What the worker writes to a child in
one turn of the event loop leaves in one write (a job for an idle child at
once); what a child writes is read in chunks. A child that writes a line that
is not a message of the protocol is killed: its running job fails with
``WorkerChildDied`` saying why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from typing import assert_never

from netdist.jsonline import MalformedLineError
from netdist.parent_death import child_args
from netdist.worker.child_protocol import (
    CancelJob,
    ChildInit,
    ChildMessage,
    ChildReady,
    JobFailed,
    JobLogged,
    JobOutput,
    JobProgressed,
    JobSkipped,
    LoadScript,
    RunJob,
    decode_from_child,
)
from netdist.worker.job import (
    Environment,
    Job,
    JobError,
    JobLog,
    JobProgress,
    JobRef,
    JobResult,
)

log = logging.getLogger("netdist.worker.executor")

_STREAM_LIMIT = 1 << 30
_READ_SIZE = 1 << 16
MAX_SCRIPTS = 200
"""Job scripts one child loads at most; a job of another script then needs a fresh child."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChildEvents:
    """What a child reports to the executor that placed jobs in it."""

    started: Callable[[JobRef], None]
    """A job became the head of a child that is running jobs (it counts as started)."""
    finished: Callable[[JobResult], None]
    progress: Callable[[JobProgress], None]
    logged: Callable[[JobLog], None]
    """Lines the running job logged (before its result)."""
    freed: Callable[[], None]
    """What the child wrote at once is handled: the jobs it finished (or skipped) left room for others."""
    exited: Callable[[ChildProcess, int | None], None]
    """The process ended (its return code; None if it never started)."""


@dataclasses.dataclass(slots=True)
class Entry:
    """A job written (or about to be written) to a child."""

    job: Job
    loads: int = 0
    """Scripts the child must have loaded before it runs this job (every LoadScript sent before it)."""
    revoked: bool = False
    cancel_sent_at: float | None = None


class ChildProcess:
    """One executor child process and the jobs queued in it, in order."""

    def __init__(
        self,
        environment: Environment,
        events: ChildEvents,
        *,
        python: str,
        max_memory_bytes: int | None,
        capture_output: bool = False,
        spare: asyncio.Task[asyncio.subprocess.Process] | None = None,
    ) -> None:
        """``environment``: its wheels are the child's; ``spare``: a child process started ahead
        (:func:`spawn`), waiting for its ChildInit."""
        self.wheels_key = environment.wheels_key
        self._scripts: dict[str, tuple[int, int]] = {}
        """Script sha256 -> (its number in the child, its generation)."""
        self._loaded: Environment | None = None
        """The environment last found with its script loaded here (environments are immutable)."""
        self._names: set[str] = set()
        """The file names the loaded scripts are compiled under (none given: their cache path)."""
        self._loads_sent = 0
        self._loads_done = 0
        self._spare = spare
        self.events = events
        self.python = python
        self.entries: collections.deque[Entry] = collections.deque()
        self.proc: asyncio.subprocess.Process | None = None
        self.head_started_at: float | None = None
        """When the head job started running; None while the child still loads a script before it."""
        self.kill_reason: str | None = None
        self.broken: str | None = None
        """Why the child was killed for breaking the protocol, if it was."""
        self.gone = False
        self.loading_since = time.monotonic()
        """When the child started on the script load the head waits for (while ``head_started_at`` is None)."""
        self.revoked = 0
        """Entries marked revoked (still queued until the child answers or dies)."""
        self._loop = asyncio.get_running_loop()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        init = ChildInit(
            paths=tuple(str(p) for p in environment.wheel_dirs),
            max_memory_bytes=max_memory_bytes,
            capture_output=capture_output,
        )
        self._write(init.encode())
        self.task = self._loop.create_task(self._run(), name="netdist-child")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def load(self) -> int:
        """Jobs in this child that still count (not revoked)."""
        return len(self.entries) - self.revoked

    def accepts(self, environment: Environment) -> bool:
        """Jobs of ``environment`` can run here: the same wheels, and its script loaded (as the cache holds
        it now) or room to load it."""
        if environment is self._loaded:  # the common case: the environment of the jobs before
            return True
        if environment.wheels_key != self.wheels_key:
            return False
        known = self._scripts.get(environment.script_sha256)
        if known is None:
            return len(self._scripts) < MAX_SCRIPTS
        if known[1] != environment.script_generation:
            return False
        self._loaded = environment  # its script is loaded here for good: accepted from now on
        return True

    def add(self, job: Job) -> None:
        """Queue ``job`` (which this child :meth:`accepts`), loading its script first if it is new here."""
        environment = job.environment
        known = self._scripts.get(environment.script_sha256)
        if known is None:
            known = self._scripts[environment.script_sha256] = (len(self._scripts), environment.script_generation)
            self._loads_sent += 1
            name = job.script_name
            if name and name in self._names:  # another script by that name is here: tracebacks tell them apart
                name = f"{name}@{environment.script_sha256[:12]}"
            self._names.add(name)
            self._write(LoadScript(known[0], str(environment.script_path), name).encode())
        first = not self.entries
        self.entries.append(Entry(job=job, loads=self._loads_sent))
        if first:
            self._new_head()
            self.events.started(job.ref)
        ref = job.ref
        self._write(
            RunJob(
                ref.job_id, ref.lease_no, job.attempt, known[0], job.handler_id, job.job_name, job.input_json
            ).encode()
        )
        if first:  # an idle child starts on it now, not after the rest of this turn (a batch of leases)
            self._flush()

    def _new_head(self) -> None:
        """The head entry changed, or a script load finished: the head runs now unless a load is before it."""
        now = time.monotonic()
        entries = self.entries
        if entries and entries[0].loads <= self._loads_done:
            self.head_started_at = now
        else:
            self.head_started_at = None
            self.loading_since = now

    def mark_revoked(self, entry: Entry) -> None:
        if not entry.revoked:
            entry.revoked = True
            self.revoked += 1

    def cancel(self, entry: Entry) -> None:
        self.mark_revoked(entry)
        entry.cancel_sent_at = time.monotonic()
        self._write(CancelJob(*entry.job.ref).encode())

    def kill(self, reason: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def take_entries(self) -> list[Entry]:
        """Every job still queued here, head first; the child has none left after."""
        entries = list(self.entries)
        self.entries.clear()
        self.revoked = 0
        return entries

    def death_result(self, job: Job, returncode: int | None) -> JobResult:
        """The result of the job that was running when this child ended."""
        elapsed = 0.0 if self.head_started_at is None else time.monotonic() - self.head_started_at
        if self.kill_reason == "timeout":
            return JobResult.failed(
                job.ref,
                "JobTimeout",
                f"the job ran longer than its timeout of {job.timeout_seconds:g} s and was killed",
                duration_seconds=elapsed,
            )
        if self.broken is not None:
            how = f"was killed for writing a malformed line ({self.broken})"
        else:
            how = _describe_exit(returncode)
        return JobResult.failed(
            job.ref,
            "WorkerChildDied",
            f"the executor child process {how} while running the job",
            duration_seconds=elapsed,
        )

    def _write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in this turn of the loop leaves in one write (a job for an
        idle child at once: :meth:`add`)."""
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
            self.proc = await self._adopt_spare() or await spawn(self.python)
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
            if isinstance(exc, MalformedLineError):
                self.broken = str(exc)
            log.error("executor child failed: %s: %s", type(exc).__name__, exc)
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                returncode = await self.proc.wait()
        finally:
            self.gone = True
        self.events.exited(self, returncode)

    async def _adopt_spare(self) -> asyncio.subprocess.Process | None:
        """The spare process, if one was given and it started and still runs."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        try:
            proc = await spare
        except asyncio.CancelledError:
            discard(spare)
            raise
        except Exception as exc:
            log.warning("the spare executor child did not start (%s); starting one now", exc)
            return None
        return proc if proc.returncode is None else None

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
                self._handle(decode_from_child(line))
            if tail:
                partial.append(tail)
            self.events.freed()  # one placement pass for the chunk's finished jobs

    def _handle(self, message: ChildMessage) -> None:
        if isinstance(message, JobOutput):  # the common case first
            entry = self._pop(message.job_id, message.lease_no)
            if entry is None:
                return
            if not entry.revoked:
                self.events.finished(JobResult(entry.job.ref, message.output_json, None, message.duration_seconds))
        elif isinstance(message, JobFailed | JobSkipped):
            entry = self._pop(message.job_id, message.lease_no)
            if entry is None:
                return
            if isinstance(message, JobSkipped) or entry.revoked:
                return
            type_, text, tb = message.error
            error = JobError(type=type_, message=text, traceback=tb)
            self.events.finished(JobResult(entry.job.ref, None, error, message.duration_seconds))
        elif isinstance(message, JobProgressed | JobLogged):
            self._report(message)
        elif isinstance(message, ChildReady):
            self._loads_done += 1
            if self._loads_done > self._loads_sent:
                log.error("executor child answered a script load it was not asked for; replacing it")
                self.kill("protocol")
            elif self.head_started_at is None:
                self._new_head()
        else:
            assert_never(message)

    def _report(self, message: JobProgressed | JobLogged) -> None:
        """Progress or log lines of the running job: passed on unless it was revoked (or is not the head)."""
        if not self.entries:
            return
        head = self.entries[0]
        if head.revoked or head.job.ref != (message.job_id, message.lease_no):
            return
        if isinstance(message, JobProgressed):
            self.events.progress(JobProgress(ref=head.job.ref, percent=message.percent, text=message.text))
        else:
            self.events.logged(JobLog(head.job.ref, message.lines, message.dropped))

    def _pop(self, job_id: int, lease_no: int) -> Entry | None:
        """The head entry, which the child answered; None (and the child killed) if not."""
        entries = self.entries
        if not entries or entries[0].job.ref != (job_id, lease_no):
            log.error("executor child answered job %s/%s out of order; replacing it", job_id, lease_no)
            self.kill("protocol")
            return None
        entry = entries.popleft()
        self._new_head()
        if entry.revoked:
            self.revoked -= 1
        if entries and not entries[0].revoked:
            self.events.started(entries[0].job.ref)
        return entry


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


async def spawn(python: str) -> asyncio.subprocess.Process:
    """An executor child process, which waits for its ChildInit on stdin. Forked on the event loop (the
    main thread): the child's PDEATHSIG fires when that thread ends (netdist.parent_death). ``-P``: the
    worker's start directory is not put on the path, where it would come before the job's wheels."""
    return await asyncio.create_subprocess_exec(
        python,
        "-P",
        "-m",
        "netdist.worker.child",
        *child_args(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=_STREAM_LIMIT,
    )


def discard(spare: asyncio.Task[asyncio.subprocess.Process]) -> None:
    """A spare process no one will use: killed once it has started (now, if it has)."""

    def kill(task: asyncio.Task[asyncio.subprocess.Process]) -> None:
        if not task.cancelled() and task.exception() is None:
            with contextlib.suppress(ProcessLookupError):
                task.result().kill()

    spare.add_done_callback(kill)
