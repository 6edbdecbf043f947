"""What a worker sends back unasked: capacity, results and starts in batches, progress coalesced.

The executor reports each job's start, result and progress here directly.
Results and starts go out together, batched (256, or 5 ms after the first; at once
when the worker holds no other job),
behind the capacity whenever the wanted number moved (:mod:`netdist.worker.capacity`);
a job whose result leaves in the same flush is not reported as started. What
no stream takes stays in the :class:`~netdist.worker.ledger.Ledger` until the
next one (:meth:`Outbox.resend`). Progress is coalesced to one batch per 0.5 s,
latest value per job, sent after any start waiting to go out, and is not kept across streams. A result is made to fit
one message first (:func:`fitting`). Log lines (bounded per lease in the executor child) go out every
0.25 s and always right before any result, so that the server takes them while the lease is still
current; they wait for the next stream like results do, and are dropped with a revoked lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from netdist.wire import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ERROR_TYPE_CHARS,
    MAX_OUTPUT_BYTES,
    MAX_TRACEBACK_CHARS,
)
from netdist.worker.capacity import CapacityGauge
from netdist.worker.connection import Connection
from netdist.worker.job import JobError, JobLog, JobProgress, JobRef, JobResult
from netdist.worker.ledger import Ledger

log = logging.getLogger("netdist.worker")

FLUSH_BATCH_SIZE = 256
FLUSH_SECONDS = 0.005
"""How long the first result or start waits for others while the worker holds more jobs. Each message
costs both ends about the same whatever it holds (a gRPC write alone is about 75 µs of CPU here), and
each results message is answered by an Ack: at 2 ms, messages held about 96 results on average."""
PROGRESS_FLUSH_SECONDS = 0.5
LOG_FLUSH_SECONDS = 0.25


class Outbox:
    """Batches what the jobs report into messages on the current stream, if any."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        slots: int,
        want: Callable[[], int],
        on_nothing_held: Callable[[], None] = lambda: None,
    ) -> None:
        self.connection: Connection | None = None
        """The stream's sender; set once the worker session made it."""
        self._ledger = ledger
        self._want = want
        self._on_nothing_held = on_nothing_held
        """Called when a result leaves the worker holding no lease (a stopping worker may leave then)."""
        self._gauge = CapacityGauge(slots=slots)
        self._progress: dict[JobRef, JobProgress] = {}
        self._progress_sent_at = float("-inf")
        self._flush_timer: asyncio.TimerHandle | None = None
        self._progress_timer: asyncio.TimerHandle | None = None
        self._logs: dict[JobRef, JobLog] = {}
        self._log_timer: asyncio.TimerHandle | None = None

    # -- the executor's events --------------------------------------------------------

    def started(self, ref: JobRef) -> None:
        self._ledger.start(ref)
        self._schedule_flush()

    def result(self, result: JobResult) -> None:
        result = fitting(result)
        if not self._ledger.finish(result):
            return  # revoked or handed back meanwhile
        self._progress.pop(result.ref, None)
        if self._ledger.held_count == 0:
            self.flush()  # nothing else held whose result it could wait for: a lone job's result goes at once
            self._on_nothing_held()
        else:
            self._schedule_flush()

    def progress(self, progress: JobProgress) -> None:
        if not self._ledger.holds(progress.ref):
            return
        self._progress[progress.ref] = progress
        if self._progress_timer is None:
            delay = max(0.0, self._progress_sent_at + PROGRESS_FLUSH_SECONDS - time.monotonic())
            self._progress_timer = asyncio.get_running_loop().call_later(delay, self._flush_progress)

    def log(self, logged: JobLog) -> None:
        if not self._ledger.holds(logged.ref):
            return
        waiting = self._logs.get(logged.ref)
        if waiting is not None:  # rare: a batch the child sent while the last one still waits here
            logged = JobLog(logged.ref, waiting.lines + logged.lines, waiting.dropped + logged.dropped)
        self._logs[logged.ref] = logged
        if self._log_timer is None:
            self._log_timer = asyncio.get_running_loop().call_later(LOG_FLUSH_SECONDS, self._flush_logs)

    def drop_progress(self, ref: JobRef) -> None:
        """Send no more progress nor log lines of ``ref`` (revoked or handed back)."""
        self._progress.pop(ref, None)
        self._logs.pop(ref, None)

    # -- the stream -----------------------------------------------------------------------

    def resend(self) -> None:
        """A new stream: the capacity and everything unacknowledged go out again."""
        self._gauge.reset()
        self._ledger.resend()
        self.flush()

    def send_no_capacity(self) -> None:
        """Capacity 0 now, moved or not (the server is draining: nothing is to come back)."""
        assert self.connection is not None
        self._gauge.update(0)
        self.connection.send_capacity(0)

    def _schedule_flush(self) -> None:
        if self._ledger.waiting_count >= FLUSH_BATCH_SIZE:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Send the capacity if it moved, then results and starts; kept while no stream takes them."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        connection = self.connection
        if connection is None or not connection.ready:
            return  # the ledger keeps them; the next stream gets them all
        capacity = self._gauge.update(self._want())
        if capacity is not None:
            connection.send_capacity(capacity)
        if self._logs:  # before the results: a result ends the lease the lines belong to
            self._send_logs(connection)
        outgoing = self._ledger.flush()
        if outgoing.results:
            connection.send_results(outgoing.results)
        if outgoing.started:
            connection.send_started(outgoing.started)

    def _flush_logs(self) -> None:
        self._log_timer = None
        connection = self.connection
        if self._logs and connection is not None and connection.ready:
            self._send_logs(connection)

    def _send_logs(self, connection: Connection) -> None:
        items, self._logs = self._logs, {}
        connection.send_logs(items.values())

    def _flush_progress(self) -> None:
        self._progress_timer = None
        self._progress_sent_at = time.monotonic()
        items, self._progress = self._progress, {}
        connection = self.connection
        if items and connection is not None and connection.ready:
            if self._flush_timer is not None:
                self.flush()  # the starts first: progress from a job the server thinks unstarted would mislead
            connection.send_progress(items.values())


def fitting(result: JobResult) -> JobResult:
    """``result`` as it fits one message to the server.

    An output past MAX_OUTPUT_BYTES fails the job (``OutputTooLarge``) rather
    than a message the server would refuse, which would break the stream and,
    re-sent after each reconnect, break it again; a failed job's texts are cut.
    """
    output, error = result.output_json, result.error
    if output is not None and len(output) > MAX_OUTPUT_BYTES:
        message = f"the job's output is {len(output)} bytes of JSON, the limit is {MAX_OUTPUT_BYTES}"
        log.warning("job %s: %s", result.ref, message)
        return JobResult.failed(result.ref, "OutputTooLarge", message, duration_seconds=result.duration_seconds)
    if error is not None and (
        len(error.type) > MAX_ERROR_TYPE_CHARS
        or len(error.message) > MAX_ERROR_MESSAGE_CHARS
        or len(error.traceback) > MAX_TRACEBACK_CHARS
    ):
        cut = len(error.traceback) - MAX_TRACEBACK_CHARS
        return result._replace(
            error=JobError(
                type=error.type[:MAX_ERROR_TYPE_CHARS],
                message=error.message[:MAX_ERROR_MESSAGE_CHARS],
                traceback=error.traceback if cut <= 0 else f"[{cut} characters cut]\n{error.traceback[cut:]}",
            )
        )
    return result
