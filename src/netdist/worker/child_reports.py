"""What the running job reports before its result, in the executor child: progress, coalesced, and
log lines, bounded, both sent to the worker by the child's writer thread when due.

``ctx.log`` is the ``netdist.job`` logger; besides the worker's stderr it has a
:class:`CentralLogHandler` that hands each record to the :class:`LogGate` of
the child. With ``--capture-output`` the child's ``sys.stdout`` and
``sys.stderr`` are :class:`CapturedStream` s that do the same with each line
written (and still write it through to stderr).

The gate keeps the lines of the running job and counts what one lease logs:
past :data:`~netdist.wire.MAX_JOB_LOG_LINES` lines or
:data:`~netdist.wire.MAX_JOB_LOG_CHARS` characters it keeps nothing more and
counts the lines dropped instead, so a job that logs in a loop costs the pipe,
the worker and the server no more than the bound. The child's writer thread
sends what is waiting every :data:`LOG_INTERVAL_SECONDS` (at once when
:data:`LOG_BATCH_LINES` are waiting); the rest goes right before the job's
result. A job that logs nothing costs one check of an empty list per job.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import BinaryIO, TextIO

from netdist.wire import MAX_JOB_LOG_CHARS, MAX_JOB_LOG_LINE_CHARS, MAX_JOB_LOG_LINES
from netdist.worker.child_protocol import JobLogged, JobProgressed

PROGRESS_INTERVAL_SECONDS = 0.2
"""At most one progress line per job in this interval (the last one is always sent)."""
LOG_INTERVAL_SECONDS = 0.2
LOG_BATCH_LINES = 200
"""This many lines waiting are sent at once, without waiting for the interval."""

Ref = tuple[int, int]


class ProgressGate:
    """Coalesces the progress of the running job to one line per interval."""

    def __init__(self, interval_seconds: float = PROGRESS_INTERVAL_SECONDS) -> None:
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._ref: Ref | None = None
        self._pending: tuple[float, str] | None = None
        self._last_sent = float("-inf")

    def start(self, ref: Ref) -> None:
        with self._lock:
            self._ref = ref
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
        percent, text = pending
        job_id, lease_no = self._ref
        return JobProgressed(job_id, lease_no, percent, text).encode()


class LogGate:
    """The running job's log lines waiting to go to the worker, bounded per lease."""

    def __init__(self, interval_seconds: float = LOG_INTERVAL_SECONDS) -> None:
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._ref: Ref | None = None
        self._lines: list[tuple[float, str, str]] = []
        self._dropped = 0  # not yet reported
        self._count = 0  # lines kept for this lease so far
        self._chars = 0
        self._full = False
        self._first_at: float | None = None  # monotonic time the oldest waiting line came

    def start(self, ref: Ref) -> None:
        with self._lock:
            self._ref = ref
            self._lines = []
            self._dropped = self._count = self._chars = 0
            self._full = False
            self._first_at = None

    def add(self, at: float, level: str, text: str) -> bool:
        """Keep one line of the running job (or count it dropped); True when the writer thread should look
        (a batch is due now, or the first line is waiting)."""
        if len(text) > MAX_JOB_LOG_LINE_CHARS:
            text = text[: MAX_JOB_LOG_LINE_CHARS - 1] + "…"
        with self._lock:
            if self._ref is None:
                return False  # logged outside a job (import time, a stray thread): the worker's stderr has it
            if self._full or self._count >= MAX_JOB_LOG_LINES or self._chars + len(text) > MAX_JOB_LOG_CHARS:
                self._full = True  # once cut, cut for good: the marker stays the last entry
                self._dropped += 1
                return self._dropped == 1
            self._count += 1
            self._chars += len(text)
            self._lines.append((at, level, text))
            if self._first_at is None:  # the writer thread sleeps without a deadline: give it one
                self._first_at = time.monotonic()
                return True
            return len(self._lines) >= LOG_BATCH_LINES

    def time_until_due(self) -> float | None:
        with self._lock:
            if self._first_at is None and not self._dropped:
                return None
            if self._first_at is None:
                return 0.0
            return max(0.0, self._first_at + self._interval - time.monotonic())

    def take_due(self) -> bytes | None:
        with self._lock:
            if not self._lines and not self._dropped:
                return None
            due = (
                self._dropped
                or len(self._lines) >= LOG_BATCH_LINES
                or (self._first_at is not None and time.monotonic() - self._first_at >= self._interval)
            )
            return self._take() if due else None

    def take_final(self) -> bytes | None:
        """What the job that just ended left unsent, if anything; no job runs after this."""
        if not self._lines and not self._dropped:  # the common case, without the lock
            self._ref = None
            return None
        with self._lock:
            line = self._take()
            self._ref = None
            return line

    def _take(self) -> bytes | None:
        lines, dropped, ref = self._lines, self._dropped, self._ref
        self._lines, self._dropped, self._first_at = [], 0, None
        if ref is None or (not lines and not dropped):
            return None
        return JobLogged(ref[0], ref[1], tuple(lines), dropped).encode()


class CentralLogHandler(logging.Handler):
    """Hands each record ``ctx.log`` takes to the gate: the message with its traceback, if any."""

    def __init__(self, gate: LogGate, wake: Callable[[], None]) -> None:
        super().__init__()
        self._gate = gate
        self._wake = wake
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._gate.add(record.created, record.levelname, text):
            self._wake()


class CapturedStream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` of a child run with ``--capture-output``: each complete line
    goes to the gate as level ``STDOUT`` or ``STDERR``, and everything still to the real stream."""

    def __init__(self, level: str, through: TextIO, gate: LogGate, wake: Callable[[], None]) -> None:
        super().__init__()
        self._level = level
        self._through = through
        self._gate = gate
        self._wake = wake
        self._partial = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._through.encoding

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._through.fileno()

    @property
    def buffer(self) -> BinaryIO:
        """The real stream's bytes: what is written there is not captured."""
        return self._through.buffer

    def write(self, s: str) -> int:
        self._through.write(s)
        with self._lock:
            text = self._partial + s
            *lines, self._partial = text.split("\n")
        wake = False
        now = time.time()
        for line in lines:
            wake = self._gate.add(now, self._level, line) or wake
        if wake:
            self._wake()
        return len(s)

    def flush(self) -> None:
        self._through.flush()

    def end_job(self) -> None:
        """The job ended: a last line without its newline is the job's too."""
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._gate.add(time.time(), self._level, rest)
