"""The options of the worker's one gRPC channel (the job stream and blob fetches): keepalive, reconnects, sizes."""

from __future__ import annotations

from netdist.wire import SERVER_MAX_RECEIVE_BYTES, WORKER_MAX_RECEIVE_BYTES

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 4000),
    ("grpc.http2.ping_timeout_ms", 4000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
"""A ping every 5 s that must be answered within 4 s, also while no data flows
(the server allows pings 1 s apart: see server/app.py). gRPC core (1.85 as
1.66) waits ``ping_timeout_ms`` (default 1 minute) for the ack, not
``keepalive_timeout_ms``: without it a frozen peer went unnoticed for over 30 s."""

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_receive_message_length", WORKER_MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", SERVER_MAX_RECEIVE_BYTES),
    *KEEPALIVE_OPTIONS,
]
"""For the one channel that carries both the job stream and PackageService fetches."""
