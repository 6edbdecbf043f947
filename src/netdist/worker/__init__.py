"""The netdist worker: connects to a server, runs jobs in executor child processes.

    cli.py              ``netdist-worker connect HOST:PORT``; builds the WorkerConfig
    session.py          one run: leases to jobs, acks, revokes, stop and drain
    outbox.py           what goes back: capacity, results and starts batched, progress coalesced
    connection.py       the JobService stream: hello, reconnect with backoff, keepalive
    stream_messages.py  its messages: protobuf to worker values and back, in batches
    channel_options.py  the gRPC channel's keepalive, reconnect and size options
    ledger.py           leases held, started, unacked, unsent (pure)
    result_file.py      unacked results kept on disk from one run to the next
    capacity.py         how many leases to ask for: slots plus a short prefetch (pure)
    identity.py         the machine's facts for Hello, the worker id's lock, the credential
    cache.py            content-addressed artifacts (wheels, job scripts) fetched by hash
    blob_source.py      where blobs come from, written only if they hash to their name
    integrity.py        a wheel unpacked safely; a file or a tree checked against its hashes
    executor.py         one child process per slot; placement, timeouts, revokes, crashes
    child_process.py    the worker's handle on one child: the jobs queued in it
    child_protocol.py   the messages between them, encoded and decoded
    child.py            the child side: imports the job script, runs ``process``
    job.py              the values passed between them (no protobuf past the connection)

Kept free of heavy imports: ``python -m netdist.worker.child`` imports this package.
"""

from __future__ import annotations

import os

# gRPC's core (1.85) logs each failed TLS handshake at INFO on stderr, next to
# the one line netdist prints about it. Only errors, unless the user set
# GRPC_VERBOSITY; gRPC reads it once, when grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
