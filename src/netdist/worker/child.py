"""The executor child: runs job scripts' ``process`` for jobs read from stdin.

Started by the executor as ``[sys.executable, "-P", "-m", "netdist.worker.child",
"--parent-pid", PID]``; it dies with the worker (:mod:`netdist.parent_death`).
It speaks :mod:`netdist.worker.child_protocol` (newline-delimited, never
pickle): it parses each job's input (``InputNotJson`` if it is not JSON) and
encodes its output (``OutputNotJson`` if that fails).

With ``max_memory_bytes`` the child caps its own data size (``RLIMIT_DATA``:
heap and private writable mappings) before it loads the script, so a job that
allocates past it gets a ``MemoryError`` (or its child dies) instead of pushing
the machine into swap or the OOM killer. ``RLIMIT_AS`` would not do: the
address space of an idle Python with two threads is already over 200 MB.

The child is bound to one set of wheels (``sys.path``) for its whole life: a
new package version runs in a new process. The job scripts that run on those
wheels are loaded into it one by one as jobs need them (``LoadScript``), each
as its own module, so that handlers sharing a package share a process instead
of starting one each time a worker switches between their jobs. The protocol
gets a private copy of the original stdout;
fd 1 then points at stderr, so ``print`` in a job cannot corrupt it. Jobs run
one at a time, in order; a thread reads stdin so that a cancel can overtake the
jobs queued before it. Each job's result is in the pipe before the next job
starts: a job that kills its child (``os._exit``, a segfault) takes no finished
result along, and only that job is charged with the death. Another thread
writes the running job's progress. End of stdin means the worker is gone: exit
at once.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import linecache
import logging
import math
import os
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from netdist import json_codec
from netdist.malloc_tuning import keep_freed_memory
from netdist.parent_death import exit_with_parent, parent_pid_from
from netdist.worker.child_protocol import (
    CancelJob,
    ChildError,
    ChildInit,
    ChildReady,
    JobFailed,
    JobOutput,
    JobSkipped,
    LoadScript,
    RunJob,
    WorkerDecoder,
    WorkerMessage,
)
from netdist.worker.child_reports import CapturedStream, CentralLogHandler, LogGate, ProgressGate

Process = Callable[[Any, Any], Any]
Ref = tuple[int, int]
"""A job's id and lease number."""

_READ_SIZE = 1 << 16
_OUTPUT_ENCODER = json_codec.Encoder(allow_nan=False, separators=(",", ":"))


class _Writer:
    """The only writer of the protocol stream (a file descriptor, unbuffered).

    The main thread writes each message itself, before it goes on to the next
    job: nothing it sent waits in this process for a thread that a dying job
    would stop. A thread writes the running job's progress and log lines when
    they are due. The lock keeps lines whole and a job's progress and log
    lines before its result.
    """

    def __init__(self, fd: int, progress: ProgressGate, logs: LogGate) -> None:
        self._fd = fd
        self._progress = progress
        self._logs = logs
        self._lock = threading.Lock()
        self._wakes: queue.SimpleQueue[None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="netdist-progress", daemon=True).start()

    def send(self, line: bytes) -> None:
        with self._lock:
            self._write(line)

    def finish(self, result: bytes) -> None:
        """Write a job's result line, after its last unsent log lines and progress."""
        with self._lock:
            logs = self._logs.take_final()
            final = self._progress.take_final()
            if logs is not None:
                final = logs if final is None else logs + final
            self._write(result if final is None else final + result)

    def wake(self) -> None:
        """A progress value may be due: let the thread look."""
        self._wakes.put(None)

    def _run(self) -> None:
        while True:
            waits = [t for t in (self._progress.time_until_due(), self._logs.time_until_due()) if t is not None]
            with contextlib.suppress(queue.Empty):
                self._wakes.get(timeout=min(waits, default=None))
            with self._lock:
                for due in (self._logs.take_due(), self._progress.take_due()):
                    if due is not None:
                        self._write(due)

    def _write(self, data: bytes) -> None:
        """All of ``data`` (os.write writes less only when a signal interrupts it)."""
        try:
            written = os.write(self._fd, data)
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(self._fd, view) :]
        except OSError:
            os._exit(0)  # the worker is gone


class _Reader:
    """Reads stdin in a thread: jobs and script loads queue up in order, cancels apply at once.

    What one read brings (a write of the worker: up to the child's queue of jobs) goes to the main
    thread in one hand-over, not one per job: each hand-over costs both threads a wake-up."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._decoder = WorkerDecoder()
        self._queue: queue.SimpleQueue[list[RunJob | LoadScript]] = queue.SimpleQueue()
        self._ready: collections.deque[RunJob | LoadScript] = collections.deque()
        """Jobs and loads handed over, not yet taken (the main thread's own)."""
        self._cancelled: set[Ref] = set()
        self._lock = threading.Lock()
        messages: list[WorkerMessage] = []
        while not messages:
            chunk = os.read(fd, _READ_SIZE)
            if not chunk:
                os._exit(0)  # the worker is gone before it sent the init line
            messages = self._decoder.feed(chunk)
        first = messages[0]
        if not isinstance(first, ChildInit):
            raise ValueError(f"the worker's first message is {type(first).__name__}, not ChildInit")
        self.init = first
        self._ready.extend(self._sort(messages[1:]))
        threading.Thread(target=self._run, name="netdist-reader", daemon=True).start()

    def next(self) -> RunJob | LoadScript:
        """The next job or script to load."""
        ready = self._ready
        while not ready:
            ready.extend(self._queue.get())
        return ready.popleft()

    def take_cancelled(self, ref: Ref) -> bool:
        if not self._cancelled:  # the common case, without the lock
            return False
        with self._lock:
            if ref in self._cancelled:
                self._cancelled.discard(ref)
                return True
            return False

    def _run(self) -> None:
        try:
            self._read()
        except BaseException:
            traceback.print_exc()
            os._exit(70)
        os._exit(0)  # end of stdin: the worker closed us or died

    def _read(self) -> None:
        while chunk := os.read(self._fd, _READ_SIZE):
            runnable = self._sort(self._decoder.feed(chunk))
            if runnable:
                self._queue.put(runnable)
        self._decoder.end()

    def _sort(self, messages: list[WorkerMessage]) -> list[RunJob | LoadScript]:
        """The jobs and loads among ``messages``, in order; their cancels noted first."""
        runnable: list[RunJob | LoadScript] = []
        for message in messages:
            if isinstance(message, RunJob | LoadScript):
                runnable.append(message)
            elif isinstance(message, CancelJob):
                with self._lock:
                    self._cancelled.add((message.job_id, message.lease_no))
            else:
                raise ValueError("the worker sent ChildInit twice")
        return runnable


class _JobFilter(logging.Filter):
    """Stamps log records with the running job's id."""

    def __init__(self) -> None:
        super().__init__()
        self.job_id: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = self.job_id
        return True


class _Context:
    """The ``ctx`` argument of ``process``; implements :class:`netdist.handler.JobContext`."""

    __slots__ = (
        "_progress",
        "_writer",
        "attempt",
        "handler_id",
        "job_id",
        "job_name",
        "log",
    )

    def __init__(
        self,
        *,
        job: RunJob,
        log: logging.Logger,
        progress: ProgressGate,
        writer: _Writer,
    ) -> None:
        self.job_id = job.job_id
        self.attempt = job.attempt
        self.handler_id = job.handler_id
        self.job_name = job.job_name
        self.log = log
        self._progress = progress
        self._writer = writer

    def progress(self, percent: float, text: str = "") -> None:
        percent = float(percent)
        if not math.isfinite(percent):  # JSON has no NaN: the writer could not send it
            raise ValueError(f"progress percent must be a finite number, not {percent}")
        if self._progress.offer(percent, str(text)):
            self._writer.wake()


def _load_process(script: str, filename: str) -> Process:
    """Import the job script from ``script`` (its cache path), compiled under ``filename``: the name
    its frames show in tracebacks. Its source lines are put in ``linecache`` under that name."""
    name = "netdist_job_" + os.path.basename(script).removesuffix(".py")[:16]
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import job script {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with open(script, "rb") as f:
        source = f.read()
    if filename != script:
        text = source.decode("utf-8", "replace")
        linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # the admin's code, as uploaded
    process = getattr(module, "process", None)
    if not callable(process):
        raise AttributeError("the job script defines no process(job_input, ctx) function")
    return cast(Process, process)  # a callable named process: the job script's own


def _script_name(name: str) -> str:
    """A file name from the server as a bare name ("" if none): never a path the traceback could mislead with."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())


def _limit_memory(limit_bytes: int) -> None:
    """Cap this process's data size; a lower hard limit already in place stays."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


def _error(exc: BaseException, *, prefix: str = "", type_: str = "", script: str = "") -> ChildError:
    """``exc`` as a job error; with ``script``, its traceback starts at the script's first frame
    (the worker's own frames above it say nothing to the script's author)."""
    tb = exc.__traceback__
    if script:
        frame = tb
        while frame is not None and frame.tb_frame.f_code.co_filename != script:
            frame = frame.tb_next
        tb = frame or tb
    return ChildError(
        type=type_ or type(exc).__name__,
        message=prefix + str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, tb)),
    )


class _Script(NamedTuple):
    """A loaded job script: its ``process`` or why it did not load, and its file name in frames."""

    process: Process | None
    error: ChildError | None
    name: str


class _Runner:
    def __init__(self, writer: _Writer, progress: ProgressGate, logs: LogGate) -> None:
        self.scripts: dict[int, _Script] = {}
        self.max_memory_bytes: int | None = None
        self.progress = progress
        self.logs = logs
        self.captured: list[CapturedStream] = []
        self.writer = writer
        self.filter = _JobFilter()
        self.log = logging.getLogger("netdist.job")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s job %(job_id)s: %(message)s"))
        handler.addFilter(self.filter)
        self.log.addHandler(handler)
        self.log.addHandler(CentralLogHandler(logs, writer.wake))
        self.log.setLevel(logging.INFO)
        self.log.propagate = False

    def load(self, load: LoadScript) -> None:
        """Import a job script; its jobs fail with the error if it does not load."""
        name = _script_name(load.script_name) or load.script
        try:
            script = _Script(_load_process(load.script, name), None, name)
        except BaseException as exc:
            script = _Script(None, _error(exc, prefix="cannot load the job script: ", script=name), name)
        self.scripts[load.no] = script
        self.writer.send(ChildReady().encode())

    def run(self, job: RunJob) -> None:
        job_id, lease_no = job.job_id, job.lease_no
        try:
            job_input = json_codec.decode(job.input_json.decode())  # from str: bytes cost an encoding guess
        except ValueError as exc:
            error = ChildError(type="InputNotJson", message=f"the job's input is not JSON: {exc}")
            self.writer.send(JobFailed(job_id, lease_no, error, 0.0).encode())
            return
        self.filter.job_id = job_id
        self.progress.start((job_id, lease_no))
        self.logs.start((job_id, lease_no))
        started = time.perf_counter()
        message: JobOutput | JobFailed
        script = self.scripts.get(job.script_no)
        if script is None or script.process is None:
            missing = ChildError(type="Exception", message=f"job script {job.script_no} is not loaded")
            failure = script.error if script is not None else None
            message = JobFailed(job_id, lease_no, failure or missing, time.perf_counter() - started)
        else:
            ctx = _Context(job=job, log=self.log, progress=self.progress, writer=self.writer)
            try:
                output = script.process(job_input, ctx)
            except BaseException as exc:
                message = JobFailed(job_id, lease_no, self._job_error(exc, script.name), time.perf_counter() - started)
            else:
                duration = time.perf_counter() - started
                try:
                    text = _OUTPUT_ENCODER.encode(output)
                except (TypeError, ValueError) as exc:
                    error = _error(exc, prefix="the job's output is not JSON: ", type_="OutputNotJson")
                    message = JobFailed(job_id, lease_no, error, duration)
                else:
                    message = JobOutput(job_id, lease_no, duration, text.encode())
        for stream in self.captured:
            stream.end_job()
        self.writer.finish(message.encode())
        self.filter.job_id = None

    def _job_error(self, exc: BaseException, script_name: str) -> ChildError:
        error = _error(exc, script=script_name)
        if isinstance(exc, MemoryError) and self.max_memory_bytes and not str(exc):
            limit_mb = self.max_memory_bytes >> 20
            message = f"the job ran out of memory (this worker allows {limit_mb} MB per job: --max-job-memory)"
            error = error._replace(message=message)
        return error


def _protocol_fd() -> int:
    """A private copy of the original stdout; fd 1 (``print``) goes to stderr from now on."""
    fd = os.dup(1)
    os.dup2(2, 1)
    return fd


def main() -> None:
    exit_with_parent(parent_pid_from(sys.argv[1:]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker to handle
    protocol_fd = _protocol_fd()  # before any user code runs, import time included
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    progress = ProgressGate()
    logs = LogGate()
    runner = _Runner(_Writer(protocol_fd, progress, logs), progress, logs)
    reader = _Reader(sys.stdin.fileno())
    init = reader.init
    if init.capture_output:
        runner.captured = [
            CapturedStream("STDOUT", sys.stdout, logs, runner.writer.wake),
            CapturedStream("STDERR", sys.stderr, logs, runner.writer.wake),
        ]
        sys.stdout, sys.stderr = runner.captured
    if init.max_memory_bytes is not None:
        runner.max_memory_bytes = init.max_memory_bytes
        _limit_memory(init.max_memory_bytes)
    else:  # under a data limit the pad would count against the job's memory
        keep_freed_memory()
    sys.path[0:0] = init.paths
    while True:
        job = reader.next()
        if isinstance(job, LoadScript):
            runner.load(job)
            continue
        if reader.take_cancelled((job.job_id, job.lease_no)):
            runner.writer.send(JobSkipped(job.job_id, job.lease_no).encode())
            continue
        runner.run(job)


if __name__ == "__main__":
    main()
