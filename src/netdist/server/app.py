"""Build the server, serve until a signal, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from netdist.api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    packages_pb2,
    packages_pb2_grpc,
)
from netdist.errors import StoreUnavailableError, first_line
from netdist.server.admin_service import AdminService
from netdist.server.audit import AuditLog
from netdist.server.auth import AuthInterceptor
from netdist.server.blobs import BlobStore
from netdist.server.call_refusals import CallRefusals
from netdist.server.clock import SYSTEM_CLOCK
from netdist.server.deps_resolver import ResolverConfig
from netdist.server.dispatcher import LAZY_LEASE_SECONDS, Dispatcher
from netdist.server.fetch_frames import PassPreEncoded
from netdist.server.heartbeat_pace import HeartbeatPace
from netdist.server.job_service import JobService
from netdist.server.manager import HandlerManager
from netdist.server.metrics import MetricsServer, Sources
from netdist.server.package_service import PackageService
from netdist.server.retention import Pruner, Retention
from netdist.server.store import catalog
from netdist.server.store.engine import default_url, describe, open_engine
from netdist.server.store.facade import Store
from netdist.server.store.outage import StoreHealth
from netdist.server.store_lock import lock_store
from netdist.server.tokens import TokenCache, make_first_tokens
from netdist.server.transport import ServerTLS
from netdist.server.upload import UploadLimits
from netdist.server.wire_guard import DecodeGuard
from netdist.wire import SERVER_MAX_RECEIVE_BYTES
from netdist.ziplimit import ZipLimits

log = logging.getLogger("netdist.server")
MAX_SEND_BYTES = 64 * 1024 * 1024
"""Answers the server builds itself (listings, blob chunks of 1 MiB); what it takes in is bounded by
:data:`netdist.wire.SERVER_MAX_RECEIVE_BYTES` (4 MiB: the largest message the protocol needs, see wire.py)."""
MAX_PENDING_CALLS = 20_000
"""Calls gRPC core has taken from the wire and the server has not yet accepted wait in its queue; past
1,000 it starts to cancel new ones and past 3,000 it cancels every one (its defaults). Workers
reconnecting together after a restart come faster than the server accepts their streams: with the
defaults, of 10,000 streams opened at once a bare grpc.aio server took 2,977, netdist about 3,500
(bench/idle_streams.py). Memory stays bounded: a pending call costs a few KB."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = Path("netdist-data")
    db_url: str | None = None
    heartbeat_interval_seconds: float = 5.0
    max_heartbeats_per_second: float = 500.0
    """The heartbeat interval grows past ``heartbeat_interval_seconds`` to keep every connected
    worker's heartbeats together under this (:mod:`netdist.server.heartbeat_pace`)."""
    reconnect_grace_seconds: float = 2.0
    lease_write_delay_seconds: float = LAZY_LEASE_SECONDS
    """A lease is written once it has been out this long (server/leases.py); 0: at once."""
    handler_call_timeout_seconds: float = 600.0
    grace_seconds: float = 5.0
    tls: ServerTLS | None = None
    """None: plaintext (the CLI allows it on loopback, or with --insecure)."""
    upload_limits: UploadLimits = dataclasses.field(default_factory=UploadLimits)
    zip_limits: ZipLimits = dataclasses.field(default_factory=ZipLimits)
    max_store_bytes: int | None = None
    retention: Retention = dataclasses.field(default_factory=Retention)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """None: no metrics; 0: a free port (``NetDistServer.metrics_address`` says which)."""
    resolver: ResolverConfig = dataclasses.field(default_factory=ResolverConfig)
    """Where job scripts' dependencies are resolved from, and for how long at most."""


class NetDistServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self.metrics: MetricsServer | None = None
        self.metrics_address = ""
        self._stopped = asyncio.Event()
        self._store_lock: Connection | None = None  # PostgreSQL: the connection holding the database's lock

    async def start(self) -> str:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        url = cfg.db_url or default_url(cfg.data_dir)
        try:
            self._store_lock = await asyncio.to_thread(lock_store, url, describe(url))
            engine = await asyncio.to_thread(open_engine, url)
        except SQLAlchemyError as exc:  # nothing runs yet: the caller says so and stops
            raise StoreUnavailableError(f"cannot open the store at {describe(url)}: {first_line(exc)}") from exc
        self.store = Store(engine, database=describe(url), on_health_change=log_store_health)
        await self.store.write(catalog.disconnect_all_workers)
        first = await make_first_tokens(self.store, cfg.data_dir)
        if first:
            log.info(
                "first start: wrote an admin and a worker token to %s (mode 0600); netdist-admin and "
                "netdist-worker started in this folder use them, netdist-server tokens manages tokens",
                " and ".join(str(p.resolve()) for p in first),
            )
        self.tokens = TokenCache(self.store)
        await self.tokens.start()
        self.blobs = await asyncio.to_thread(
            BlobStore, cfg.data_dir, max_store_bytes=cfg.max_store_bytes, limits=cfg.zip_limits
        )
        self.dispatcher = Dispatcher(
            self.store.writer,
            clock=SYSTEM_CLOCK,
            heartbeat=HeartbeatPace(cfg.heartbeat_interval_seconds, cfg.max_heartbeats_per_second),
            reconnect_grace_seconds=cfg.reconnect_grace_seconds,
            lazy_lease_seconds=cfg.lease_write_delay_seconds,
        )
        self.manager = HandlerManager(
            self.store,
            self.dispatcher,
            self.blobs,
            handler_call_timeout_seconds=cfg.handler_call_timeout_seconds,
            resolver=cfg.resolver,
        )
        options = [
            ("grpc.max_receive_message_length", SERVER_MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
            # A silently dead worker is noticed within 10 s (ping every 5 s, 4 s to answer:
            # gRPC core waits ping_timeout_ms for the ack, keepalive_timeout_ms is not
            # enough); workers ping as often (worker/channel_options.py), so allow pings 1 s
            # apart without data, or they would get GOAWAY too_many_pings.
            ("grpc.keepalive_time_ms", 5000),
            ("grpc.keepalive_timeout_ms", 4000),
            ("grpc.http2.ping_timeout_ms", 4000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        self.audit = AuditLog(self.store.writer)
        auth = AuthInterceptor(self.tokens, on_refusal=self.audit.record_refusal)
        self.refusals = CallRefusals()  # outermost: it sees the status every call ends with
        self.server = grpc.aio.server(
            options=options, interceptors=[self.refusals, auth, DecodeGuard(), PassPreEncoded()]
        )
        try:
            if cfg.tls is not None:
                self.port = self.server.add_secure_port(f"{cfg.host}:{cfg.port}", cfg.tls.credentials())
            else:
                self.port = self.server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        except RuntimeError:  # grpc's "Failed to bind": the CLI says it in one line
            self.port = 0
        if self.port == 0:
            raise OSError(cannot_listen(cfg.host, cfg.port))
        address = f"{cfg.host}:{self.port}"
        if cfg.metrics_port is not None:
            self.metrics = MetricsServer(
                Sources(
                    dispatcher=self.dispatcher, manager=self.manager, writer=self.store.writer, refusals=self.refusals
                )
            )
            self.metrics_address = self.metrics.start(cfg.metrics_host, cfg.metrics_port)
            log.info("metrics on http://%s/metrics", self.metrics_address)
        names = self._add_services(address, describe(url))
        await self.dispatcher.start(events=self.manager)
        self.audit.start()
        self.pruner = Pruner(self.store, cfg.retention, SYSTEM_CLOCK)
        self.pruner.start()
        await self.manager.startup()
        await self.server.start()
        for name in ("", *names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("database %s, data in %s", describe(url), cfg.data_dir.resolve())
        return address

    def _add_services(self, address: str, database: str) -> list[str]:
        """Job, package, admin, health and reflection services on the gRPC server; the full names of ours."""
        cfg = self.config
        jobs_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(self.dispatcher, on_platform=self.manager.locks.platform_seen), self.server
        )
        packages_pb2_grpc.add_PackageServiceServicer_to_server(
            PackageService(self.store, self.blobs, self.manager, self.audit, limits=cfg.upload_limits), self.server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(self.store, self.manager, self.dispatcher, self.audit, address=address, database=database),
            self.server,
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [
            d.services_by_name[n].full_name
            for d, n in (
                (jobs_pb2.DESCRIPTOR, "JobService"),
                (packages_pb2.DESCRIPTOR, "PackageService"),
                (admin_pb2.DESCRIPTOR, "AdminService"),
            )
        ]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        return names

    async def stop(self) -> None:
        log.info("stopping: draining workers and handler hosts")
        if self.metrics is not None:
            await self.metrics.stop()
        self.store.writer.stop_waiting()  # a store that is down now fails the last writes, not the stop
        await self.health.enter_graceful_shutdown()
        await self.pruner.stop()
        await self.dispatcher.stop()
        await self.manager.shutdown()
        await self.audit.stop()
        await self.server.stop(self.config.grace_seconds)
        await self.tokens.stop()
        if self._store_lock is not None:
            with contextlib.suppress(SQLAlchemyError):  # lost with a database that restarted: nothing to let go
                await asyncio.to_thread(self._store_lock.close)
        await asyncio.to_thread(self.store.close)
        self._stopped.set()


def log_store_health(before: StoreHealth, after: StoreHealth) -> None:
    """One line when an outage of the store begins (or changes kind) and one when it ends."""
    if after.outage is None:
        log.info("store available again after %.1f s (%s): the server's work resumes", before.seconds(), before.state)
    else:
        log.warning("store %s: %s; the server's work waits and resumes by itself", after.state, after.outage.reason)


async def serve(config: ServerConfig) -> None:
    server = NetDistServer(config)
    address = await server.start()
    tls = config.tls
    mode = "plaintext" if tls is None else "TLS, client certificates required" if tls.mutual else "TLS"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before "listening": a SIGTERM right after it stops in order
        loop.add_signal_handler(sig, stop.set)
    if server.metrics_address:
        print(f"metrics on http://{server.metrics_address}/metrics", flush=True)
    print(f"listening on {address} ({mode})", flush=True)
    await stop.wait()
    await server.stop()
    log.info("stopped")


def cannot_listen(host: str, port: int) -> str:
    return f"cannot listen on {host}:{port}: the port is taken, or the address is not this machine's"
