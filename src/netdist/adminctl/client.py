"""A small synchronous gRPC client for AdminService and PackageService.

Every call carries a timeout (except a followed log stream), and every
``grpc.RpcError`` comes back as a :class:`~netdist.errors.NetDistError`
through :func:`~netdist.errors.from_status`. A server that cannot be reached
is an :class:`~netdist.errors.UnavailableError` naming the address.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from netdist import errors
from netdist.api.v1 import admin_pb2, admin_pb2_grpc, packages_pb2, packages_pb2_grpc
from netdist.channel import ClientSecurity, sync_channel, tls_failure
from netdist.errors import (
    NetDistError,
    UnauthenticatedError,
    UnavailableError,
    from_status,
)

CHUNK_BYTES = 256 * 1024
"""Wheels travel in chunks of this size."""

UPLOAD_SECONDS_PER_MIB = 2.0
"""Extra time an upload gets on top of the call timeout, per MiB sent."""

T = TypeVar("T")


ADD_TIMEOUT_SECONDS = 330.0
"""What ``jobs add`` waits at least: longer than the server's default --resolve-timeout."""


class AdminClient:
    """One channel to one server; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        address: str,
        *,
        timeout_seconds: float = 10.0,
        security: ClientSecurity | None = None,
        token_source: str = "",
    ) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self.security = security or ClientSecurity()
        self.token_source = token_source
        """Where the token came from, named when the server refuses it."""
        self._channel: grpc.Channel | None = None
        self._admin_stub: admin_pb2_grpc.AdminServiceStub | None = None
        self._packages_stub: packages_pb2_grpc.PackageServiceStub | None = None
        self._answered = False  # the server has answered at least once

    # -- plumbing ---------------------------------------------------------

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._admin_stub = self._packages_stub = None

    @property
    def _admin(self) -> admin_pb2_grpc.AdminServiceStub:
        if self._admin_stub is None:
            self._admin_stub = admin_pb2_grpc.AdminServiceStub(self._open())
        return self._admin_stub

    @property
    def _packages(self) -> packages_pb2_grpc.PackageServiceStub:
        if self._packages_stub is None:
            self._packages_stub = packages_pb2_grpc.PackageServiceStub(self._open())
        return self._packages_stub

    def _open(self) -> grpc.Channel:
        if self._channel is None:  # lazy: --help and usage errors open no channel
            self._channel = sync_channel(self.address, self.security)
        return self._channel

    def _error(self, exc: grpc.RpcError) -> NetDistError:
        code: grpc.StatusCode = exc.code()
        details: str | None = exc.details()
        sent = _class_sent(exc)
        if sent is not None:  # the server's own error (a store outage is UNAVAILABLE too)
            return sent(details or code.name)
        if code is grpc.StatusCode.UNAUTHENTICATED and self.token_source:
            given = "the token given came from " if self.security.token else ""
            return UnauthenticatedError(f"{details} ({given}{self.token_source})")
        if code is grpc.StatusCode.UNAVAILABLE:
            reason = tls_failure(details, self.security) or details
            return UnavailableError(f"cannot reach the netdist server at {self.address}: {reason}")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            if not self._answered:
                return UnavailableError(
                    f"cannot reach the netdist server at {self.address}: no answer within {self.timeout_seconds:g}s"
                )
            return UnavailableError(f"the netdist server at {self.address} did not answer within the timeout")
        return from_status(code, details)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            result = fn()
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._answered = True
        return result

    # -- AdminService -----------------------------------------------------

    def status(self) -> admin_pb2.GetStatusResponse:
        request = admin_pb2.GetStatusRequest()
        reply: admin_pb2.GetStatusResponse = self._call(
            lambda: self._admin.GetStatus(request, timeout=self.timeout_seconds)
        )
        return reply

    def add_job_script(
        self, path: Path, *, lock: str | None = None, refresh: bool = False
    ) -> admin_pb2.AddJobScriptResponse:
        """Waits at least ADD_TIMEOUT_SECONDS: the server may be resolving the script's dependencies."""
        request = admin_pb2.AddJobScriptRequest(filename=path.name, content=path.read_bytes(), refresh=refresh)
        if lock is not None:
            request.lock = lock
        timeout = max(self.timeout_seconds, ADD_TIMEOUT_SECONDS)
        reply: admin_pb2.AddJobScriptResponse = self._call(lambda: self._admin.AddJobScript(request, timeout=timeout))
        return reply

    def job_script_deps(self, ref: str) -> admin_pb2.GetJobScriptDepsResponse:
        request = admin_pb2.GetJobScriptDepsRequest(ref=ref)
        reply: admin_pb2.GetJobScriptDepsResponse = self._call(
            lambda: self._admin.GetJobScriptDeps(request, timeout=self.timeout_seconds)
        )
        return reply

    def list_handlers(self, *, running: bool = True) -> list[admin_pb2.HandlerInfo]:
        """Every handler; ``running=False``: without their running jobs (what a table or a completion shows)."""
        request = admin_pb2.ListHandlersRequest(without_running=not running)
        reply = self._call(lambda: self._admin.ListHandlers(request, timeout=self.timeout_seconds))
        return list(reply.handlers)

    def get_handler(self, ref: str) -> admin_pb2.HandlerInfo:
        request = admin_pb2.GetHandlerRequest(ref=ref)
        reply: admin_pb2.GetHandlerResponse = self._call(
            lambda: self._admin.GetHandler(request, timeout=self.timeout_seconds)
        )
        return reply.handler

    def control_handler(self, ref: str, action: admin_pb2.HandlerAction.ValueType) -> admin_pb2.HandlerInfo:
        request = admin_pb2.ControlHandlerRequest(ref=ref, action=action)
        reply: admin_pb2.ControlHandlerResponse = self._call(
            lambda: self._admin.ControlHandler(request, timeout=self.timeout_seconds)
        )
        return reply.handler

    def handler_log(
        self, ref: str, *, tail: int = 0, follow: bool = False, jobs: bool = False
    ) -> Iterator[admin_pb2.LogLine]:
        """Log lines of a handler (with ``jobs``, its jobs' lines too, by time); with ``follow`` the stream
        stays open (no timeout)."""
        request = admin_pb2.GetHandlerLogRequest(ref=ref, tail=tail, follow=follow, jobs=jobs)
        timeout = None if follow else self.timeout_seconds
        return self._log_stream(lambda: self._admin.GetHandlerLog(request, timeout=timeout))

    def job_log(self, job_id: int, *, tail: int = 0, follow: bool = False) -> Iterator[admin_pb2.LogLine]:
        """What a job logged; with ``follow`` the stream stays open until the job has its result for good."""
        request = admin_pb2.GetJobLogRequest(job_id=job_id, tail=tail, follow=follow)
        timeout = None if follow else self.timeout_seconds
        return self._log_stream(lambda: self._admin.GetJobLog(request, timeout=timeout))

    def _log_stream(self, open_stream: Callable[[], Any]) -> Iterator[admin_pb2.LogLine]:
        stream = self._call(open_stream)
        try:
            for line in stream:
                self._answered = True
                yield line
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            stream.cancel()

    def watch(self) -> Iterator[admin_pb2.WatchResponse]:
        """The server's event stream: a snapshot, then changes; open until closed (no timeout)."""
        stream = self._call(lambda: self._admin.Watch(admin_pb2.WatchRequest(), timeout=None))
        try:
            for reply in stream:
                self._answered = True
                yield reply
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            stream.cancel()

    def list_jobs(self, *, handler_ref: str = "", status: str = "", limit: int = 0) -> list[admin_pb2.JobInfo]:
        request = admin_pb2.ListJobsRequest(handler_ref=handler_ref, status=status, limit=limit)
        reply = self._call(lambda: self._admin.ListJobs(request, timeout=self.timeout_seconds))
        return list(reply.jobs)

    def get_job(self, job_id: int) -> admin_pb2.GetJobResponse:
        request = admin_pb2.GetJobRequest(id=job_id)
        reply: admin_pb2.GetJobResponse = self._call(lambda: self._admin.GetJob(request, timeout=self.timeout_seconds))
        return reply

    def list_audit(self, *, since: float = 0.0, limit: int = 0) -> list[admin_pb2.AuditEntry]:
        request = admin_pb2.ListAuditRequest(since=since, limit=limit)
        reply = self._call(lambda: self._admin.ListAudit(request, timeout=self.timeout_seconds))
        return list(reply.entries)

    def list_workers(self) -> list[admin_pb2.WorkerInfo]:
        request = admin_pb2.ListWorkersRequest()
        reply = self._call(lambda: self._admin.ListWorkers(request, timeout=self.timeout_seconds))
        return list(reply.workers)

    def disable_worker(self, ref: str) -> admin_pb2.DisableWorkerResponse:
        request = admin_pb2.DisableWorkerRequest(ref=ref)
        reply: admin_pb2.DisableWorkerResponse = self._call(
            lambda: self._admin.DisableWorker(request, timeout=self.timeout_seconds)
        )
        return reply

    def enable_worker(self, ref: str) -> None:
        request = admin_pb2.EnableWorkerRequest(ref=ref)
        self._call(lambda: self._admin.EnableWorker(request, timeout=self.timeout_seconds))

    def remove_worker(self, ref: str) -> admin_pb2.RemoveWorkerResponse:
        request = admin_pb2.RemoveWorkerRequest(ref=ref)
        reply: admin_pb2.RemoveWorkerResponse = self._call(
            lambda: self._admin.RemoveWorker(request, timeout=self.timeout_seconds)
        )
        return reply

    # -- PackageService ---------------------------------------------------

    def upload(self, wheels: Sequence[Path]) -> packages_pb2.UploadPackageResponse:
        """Send the package wheel (first) and its dependency wheels in one stream."""
        total = sum(os.path.getsize(p) for p in wheels)
        timeout = self.timeout_seconds + UPLOAD_SECONDS_PER_MIB * total / (1024 * 1024)
        requests = upload_requests(wheels)
        reply: packages_pb2.UploadPackageResponse = self._call(lambda: self._packages.Upload(requests, timeout=timeout))
        return reply

    def list_packages(self, *, all_versions: bool = False) -> list[packages_pb2.PackageInfo]:
        request = packages_pb2.ListPackagesRequest(all_versions=all_versions)
        reply = self._call(lambda: self._packages.List(request, timeout=self.timeout_seconds))
        return list(reply.packages)

    def remove_package(self, name: str, version: str = "", *, force: bool = False) -> int:
        request = packages_pb2.RemovePackageRequest(name=name, version=version, force=force)
        reply: packages_pb2.RemovePackageResponse = self._call(
            lambda: self._packages.Remove(request, timeout=self.timeout_seconds)
        )
        return reply.removed


def upload_requests(
    wheels: Sequence[Path],
) -> Iterator[packages_pb2.UploadPackageRequest]:
    """For each wheel a header, then its bytes in chunks of :data:`CHUNK_BYTES`."""
    for path in wheels:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = packages_pb2.WheelHeader(filename=path.name, size=size)
            yield packages_pb2.UploadPackageRequest(header=header)
            while chunk := f.read(CHUNK_BYTES):
                yield packages_pb2.UploadPackageRequest(chunk=chunk)


def _class_sent(exc: grpc.RpcError) -> type[NetDistError] | None:
    """The error class the server named for its answer (None: a transport failure, or an unknown name)."""
    metadata = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    for key, value in metadata or ():
        if key == "netdist-error":
            return errors.named(str(value))
    return None
