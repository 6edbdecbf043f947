"""Message sizes both ends of the wire agree on.

gRPC reads a whole message into memory before the application sees any of
it, so a peer can make the server hold up to its receive limit per stream at
once. The server's limit is therefore what the protocol needs, not more:

- upload chunks: 256 KiB from ``netdist-admin`` (any client may send up to the limit);
- ``AddJobScript``: a job script of at most 1 MiB;
- a worker's result batch: up to :data:`RESULT_BATCH_BYTES`, or one result alone
  whose output is at most :data:`MAX_OUTPUT_BYTES` (a larger one fails its job
  with ``OutputTooLarge`` on the worker, so the stream never breaks on it);
- progress batches: up to :data:`PROGRESS_BATCH_BYTES`, each text cut to
  :data:`MAX_PROGRESS_TEXT_CHARS`;
- job log batches: up to :data:`JOB_LOG_BATCH_BYTES`, each line cut to
  :data:`MAX_JOB_LOG_LINE_CHARS`.

4 MiB is also gRPC's default receive limit, so any generic client fits.
A job input is bounded like an output (:data:`MAX_INPUT_BYTES`, refused at
``enqueue`` in the handler host), and the server splits lease batches at
:data:`LEASE_BATCH_BYTES`, far under the worker's receive limit.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

SERVER_MAX_RECEIVE_BYTES = 4 * MIB
WORKER_MAX_RECEIVE_BYTES = 256 * MIB
"""The worker trusts its server more: leases and blob chunks come from it."""

MAX_OUTPUT_BYTES = SERVER_MAX_RECEIVE_BYTES - 64 * KIB
"""A job's output JSON: one result with it, and its framing, fits one message to the server."""
MAX_INPUT_BYTES = MAX_OUTPUT_BYTES
"""A job's input JSON (what a handler enqueues)."""
MAX_ERROR_TYPE_CHARS = 200
MAX_ERROR_MESSAGE_CHARS = 16 * KIB
MAX_TRACEBACK_CHARS = 32 * KIB
"""A failed job's texts are cut to these (the traceback keeps its end, where the error is)."""
MAX_PROGRESS_TEXT_CHARS = 500

MAX_JOB_LOG_LINES = 1000
MAX_JOB_LOG_CHARS = 256 * KIB
"""What one lease of a job may log (ctx.log, captured output): lines and characters of text. Past either,
lines are dropped and counted: the worker stops sending, the server stops storing."""
MAX_JOB_LOG_LINE_CHARS = 8 * KIB
"""One logged line (a message with its traceback) is cut to this."""

RESULT_BATCH_BYTES = 1 * MIB
PROGRESS_BATCH_BYTES = 1 * MIB
JOB_LOG_BATCH_BYTES = 1 * MIB
LEASE_BATCH_BYTES = 1 * MIB
"""Batches close at about this size; one item larger than it goes alone."""
ITEM_OVERHEAD_BYTES = 64
"""Framing of one batch item beyond its payload (refs, tags, lengths, numbers), generously."""

STREAM_END_KEY = "netdist-stream-end"
"""Trailing metadata of a worker stream the server ended on purpose: why, in one line (e.g. removed)."""
