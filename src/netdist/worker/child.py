"""The executor child: runs one job script's ``process`` for jobs read from stdin.

Started by the executor as ``[sys.executable, "-m", "netdist.worker.child",
"--parent-pid", PID]``; it dies with the worker (:mod:`netdist.parent_death`).
The protocol is newline-delimited JSON, never pickle:

    stdin   {"init": {"script": PATH, "paths": [WHEEL_DIR, ...],
                      "max_memory_bytes": N}}                        once, first (N optional)
            [job_id, lease_no, attempt, handler_id, job_name]        a job, then on the next line
            INPUT                                                     its input: JSON text as leased
            {"cancel": [job_id, lease_no]}                           skip a queued job
    stdout  {"ready": true}                                          the script is loaded
            {"progress": {"job_id", "lease_no", "percent", "text"}}
            = JOB_ID LEASE_NO DURATION_SECONDS OUTPUT                 a job's output: JSON text
            {"job_id", "lease_no", "error" | "skipped", "duration_seconds"}

The job's input and output travel as JSON text the worker never parses: it
copies the lease's input bytes into the line (so the input must hold no
newline byte, which the worker ensures) and the output text into the result.
The child parses the input (``InputNotJson`` if it is not JSON) and encodes the
output (``OutputNotJson`` if that fails).

With ``max_memory_bytes`` the child caps its own data size (``RLIMIT_DATA``:
heap and private writable mappings) before it loads the script, so a job that
allocates past it gets a ``MemoryError`` (or its child dies) instead of pushing
the machine into swap or the OOM killer. ``RLIMIT_AS`` would not do: the
address space of an idle Python with two threads is already over 200 MB.

The child is bound to one environment for its whole life: a new code version
runs in a new process. The protocol gets a private copy of the original stdout;
fd 1 then points at stderr, so ``print`` in a job cannot corrupt it. Jobs run
one at a time, in order; a thread reads stdin so that a cancel can overtake the
jobs queued before it, and another thread writes, so results of many short jobs
leave in one write. End of stdin means the worker is gone: exit at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from netdist.parent_death import exit_with_parent, parent_pid_from

PROGRESS_INTERVAL_SECONDS = 0.2
"""At most one progress line per job in this interval (the last one is always sent)."""

_WAKE = b""

Process = Callable[[Any, Any], Any]
Header = list[Any]
"""A job's first line: ``[job_id, lease_no, attempt, handler_id, job_name]``."""

_OUTPUT_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class _ProgressGate:
    """Coalesces the progress of the running job to one line per interval."""

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._ref: tuple[int, int] | None = None
        self._pending: tuple[float, str] | None = None
        self._last_sent = float("-inf")

    def start(self, job_id: int, lease_no: int) -> None:
        with self._lock:
            self._ref = (job_id, lease_no)
            self._pending = None
            self._last_sent = float("-inf")

    def offer(self, percent: float, text: str) -> bool:
        """Record a value; True when it is due now (wake the writer)."""
        with self._lock:
            self._pending = (percent, text)
            return time.monotonic() - self._last_sent >= self._interval

    def time_until_due(self) -> float | None:
        with self._lock:
            if self._pending is None:
                return None
            return max(0.0, self._last_sent + self._interval - time.monotonic())

    def take_due(self) -> bytes | None:
        with self._lock:
            now = time.monotonic()
            if self._pending is None or now - self._last_sent < self._interval:
                return None
            self._last_sent = now
            return self._take()

    def take_final(self) -> bytes | None:
        """The last unsent value of the job that just ended, if any."""
        with self._lock:
            line = self._take() if self._pending is not None else None
            self._ref = None
            return line

    def _take(self) -> bytes | None:
        pending, self._pending = self._pending, None
        if pending is None or self._ref is None:
            return None
        job_id, lease_no = self._ref
        percent, text = pending
        item = {
            "job_id": job_id,
            "lease_no": lease_no,
            "percent": percent,
            "text": text,
        }
        return _encode({"progress": item})


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


class _Writer:
    """The only writer of the protocol stream; batches whatever is ready."""

    def __init__(self, stream: BinaryIO, progress: _ProgressGate) -> None:
        self._stream = stream
        self._progress = progress
        self._queue: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="netdist-writer", daemon=True).start()

    def send(self, line: bytes) -> None:
        self._queue.put(line)

    def wake(self) -> None:
        self._queue.put(_WAKE)

    def _run(self) -> None:
        while True:
            lines: list[bytes] = []
            with contextlib.suppress(queue.Empty):
                lines.append(self._queue.get(timeout=self._progress.time_until_due()))
            due = self._progress.take_due()
            if due is not None:
                lines.append(due)
            while True:
                try:
                    lines.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            data = b"".join(lines)
            if data:
                try:
                    self._stream.write(data)
                    self._stream.flush()
                except OSError:
                    os._exit(0)  # the worker is gone


class _Reader:
    """Reads stdin in a thread: jobs queue up in order, cancels apply at once."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._queue: queue.SimpleQueue[tuple[Header, bytes]] = queue.SimpleQueue()
        self._cancelled: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        first = stream.readline()
        if not first:
            os._exit(0)  # the worker is gone before it sent the init line
        self.init: dict[str, Any] = json.loads(first)["init"]
        threading.Thread(target=self._run, name="netdist-reader", daemon=True).start()

    def next(self) -> tuple[Header, bytes]:
        """The next job: its header and its input line."""
        return self._queue.get()

    def take_cancelled(self, job_id: int, lease_no: int) -> bool:
        if not self._cancelled:  # the common case, without the lock
            return False
        with self._lock:
            if (job_id, lease_no) in self._cancelled:
                self._cancelled.discard((job_id, lease_no))
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
        stream = self._stream
        for line in stream:
            message = json.loads(line)
            if isinstance(message, list):
                self._queue.put((message, stream.readline()))
                continue
            cancel = message.get("cancel")
            if cancel is not None:
                with self._lock:
                    self._cancelled.add((int(cancel[0]), int(cancel[1])))


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
        header: Header,
        log: logging.Logger,
        progress: _ProgressGate,
        writer: _Writer,
    ) -> None:
        self.job_id: int = header[0]
        self.attempt: int = header[2]
        self.handler_id: str = header[3]
        self.job_name: str = header[4]
        self.log = log
        self._progress = progress
        self._writer = writer

    def progress(self, percent: float, text: str = "") -> None:
        if self._progress.offer(float(percent), str(text)):
            self._writer.wake()


def _load_process(script: str, paths: list[str]) -> Process:
    sys.path[0:0] = paths
    name = "netdist_job_" + os.path.basename(script).removesuffix(".py")[:16]
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import job script {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    process = getattr(module, "process", None)
    if not callable(process):
        raise AttributeError(
            "the job script defines no process(job_input, ctx) function"
        )
    return process  # type: ignore[no-any-return]


def _limit_memory(limit_bytes: int) -> None:
    """Cap this process's data size; a lower hard limit already in place stays."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


def _error(exc: BaseException, *, prefix: str = "") -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": prefix + str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class _Runner:
    def __init__(self, writer: _Writer, progress: _ProgressGate) -> None:
        self.process: Process | None = None
        self.load_error: dict[str, str] | None = None
        self.max_memory_bytes: int | None = None
        self.progress = progress
        self.writer = writer
        self.filter = _JobFilter()
        self.log = logging.getLogger("netdist.job")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s job %(job_id)s: %(message)s")
        )
        handler.addFilter(self.filter)
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False

    def run(self, header: Header, input_line: bytes) -> None:
        job_id: int = header[0]
        lease_no: int = header[1]
        try:
            job_input = json.loads(input_line.removesuffix(b"\n"))
        except ValueError as exc:
            error = {
                "type": "InputNotJson",
                "message": f"the job's input is not JSON: {exc}",
                "traceback": "",
            }
            reply = {"job_id": job_id, "lease_no": lease_no, "error": error}
            self.writer.send(_encode({**reply, "duration_seconds": 0.0}))
            return
        self.filter.job_id = job_id
        self.progress.start(job_id, lease_no)
        started = time.perf_counter()
        if self.process is None:
            line = self._error_line(job_id, lease_no, started, self.load_error)
        else:
            ctx = _Context(
                header=header, log=self.log, progress=self.progress, writer=self.writer
            )
            try:
                output = self.process(job_input, ctx)
            except BaseException as exc:
                line = self._error_line(job_id, lease_no, started, self._job_error(exc))
            else:
                duration = time.perf_counter() - started
                try:
                    text = _OUTPUT_ENCODER.encode(output)
                except (TypeError, ValueError) as exc:
                    error = _error(exc, prefix="the job's output is not JSON: ")
                    error["type"] = "OutputNotJson"
                    line = self._error_line(job_id, lease_no, started, error, duration)
                else:
                    line = f"= {job_id} {lease_no} {duration!r} {text}\n".encode()
        final = self.progress.take_final()
        if final is not None:
            self.writer.send(final)
        self.writer.send(line)
        self.filter.job_id = None

    def _job_error(self, exc: BaseException) -> dict[str, str]:
        error = _error(exc)
        if isinstance(exc, MemoryError) and self.max_memory_bytes and not str(exc):
            limit_mb = self.max_memory_bytes >> 20
            error["message"] = (
                f"the job ran out of memory (this worker allows {limit_mb} MB"
                " per job: --max-job-memory)"
            )
        return error

    @staticmethod
    def _error_line(
        job_id: int,
        lease_no: int,
        started: float,
        error: dict[str, str] | None,
        duration: float | None = None,
    ) -> bytes:
        if duration is None:
            duration = time.perf_counter() - started
        reply = {"job_id": job_id, "lease_no": lease_no, "error": error}
        return _encode({**reply, "duration_seconds": duration})


def _protocol_stream() -> BinaryIO:
    """A private copy of the original stdout; fd 1 (``print``) goes to stderr from now on."""
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "wb")


def main() -> None:
    exit_with_parent(parent_pid_from(sys.argv[1:]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker to handle
    stream = _protocol_stream()  # before any user code runs, import time included
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    progress = _ProgressGate(PROGRESS_INTERVAL_SECONDS)
    runner = _Runner(_Writer(stream, progress), progress)
    reader = _Reader(sys.stdin.buffer)
    init = reader.init
    max_memory_bytes = init.get("max_memory_bytes")
    if max_memory_bytes is not None:
        runner.max_memory_bytes = int(max_memory_bytes)
        _limit_memory(runner.max_memory_bytes)
    try:
        runner.process = _load_process(
            str(init["script"]), [str(p) for p in init.get("paths", [])]
        )
    except BaseException as exc:
        runner.load_error = _error(exc, prefix="cannot load the job script: ")
    runner.writer.send(_encode({"ready": True}))
    while True:
        header, input_line = reader.next()
        job_id, lease_no = header[0], header[1]
        if reader.take_cancelled(job_id, lease_no):
            skipped = {"job_id": job_id, "lease_no": lease_no, "skipped": True}
            runner.writer.send(_encode(skipped))
            continue
        runner.run(header, input_line)


if __name__ == "__main__":
    main()
