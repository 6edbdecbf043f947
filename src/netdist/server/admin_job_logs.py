"""AdminService's job log calls: one job's lines (GetJobLog), and a handler's log with its jobs' lines
interleaved by time (GetHandlerLog with ``jobs``). Both read the store; ``follow`` polls it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from netdist.api.v1 import admin_pb2, admin_pb2_grpc
from netdist.errors import InvalidArgumentError, NotFoundError
from netdist.server.grpc_errors import to_status
from netdist.server.store import catalog
from netdist.server.store import job_logs as job_log_store
from netdist.server.store.facade import Store

FOLLOW_SECONDS = 0.3
"""How often a followed log looks for new lines."""
MAX_JOB_LINES = 5000
"""A handler's log with its jobs' lines shows at most the newest this many of those (the handler's own log
keeps 5,000 lines too); a followed one reads at most this many new ones a pass."""


class JobLogAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Mixed into AdminService, which sets these."""

    store: Store

    @to_status
    async def GetJobLog(
        self, request: admin_pb2.GetJobLogRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.LogLine]:
        job_id = request.job_id
        if job_id <= 0:
            raise InvalidArgumentError(f"'job_id': {job_id} is no job id (job ids are positive numbers)")
        status = await self.store.read(job_log_store.job_status, job_id)
        rows = await self.store.read(job_log_store.for_job, job_id, tail=max(0, request.tail))
        if status is None and not rows:
            raise NotFoundError(f"no job {job_id} (never was, or its handler was removed)")
        last = 0
        while True:
            for row in rows:
                last = row.id
                yield job_line(row)
            if not request.follow or job_log_store.ended(status):
                return  # the status is read before the lines: an ended job's last lines are in them
            await asyncio.sleep(FOLLOW_SECONDS)
            status = await self.store.read(job_log_store.job_status, job_id)
            rows = await self.store.read(job_log_store.for_job, job_id, after_id=last)

    async def handler_log_with_jobs(
        self, handler_id: str, *, tail: int, follow: bool
    ) -> AsyncIterator[admin_pb2.LogLine]:
        """The handler's own log and its jobs' lines, by time (GetHandlerLog with ``jobs``)."""
        own = await self.store.read(catalog.read_log, handler_id, tail=tail)
        jobs = await self.store.read(
            job_log_store.for_handler, handler_id, tail=min(tail or MAX_JOB_LINES, MAX_JOB_LINES)
        )
        lines = _merged(own, jobs)
        if tail:
            lines = lines[-tail:]
        last_own = own[-1].id if own else 0
        last_job = jobs[-1].id if jobs else 0
        while True:
            for line in lines:
                yield line
            if not follow:
                return
            await asyncio.sleep(FOLLOW_SECONDS)
            own = await self.store.read(catalog.read_log, handler_id, after_id=last_own)
            jobs = await self.store.read(job_log_store.for_handler, handler_id, after_id=last_job, limit=MAX_JOB_LINES)
            last_own = own[-1].id if own else last_own
            last_job = jobs[-1].id if jobs else last_job
            lines = _merged(own, jobs)
            if not lines:
                await self.still_there(handler_id)

    async def still_there(self, handler_id: str) -> None:
        """NotFoundError once the handler was removed: a followed log of it ends, saying so."""
        if not await self.store.read(catalog.handler_exists, handler_id):
            raise NotFoundError(f"handler {handler_id} was removed; its log ends here")


def job_line(row: Any) -> admin_pb2.LogLine:
    return admin_pb2.LogLine(
        at=row.at, level=row.level, source="job", message=row.text, job_id=row.job_id, attempt=row.attempt
    )


def _handler_line(row: Any) -> admin_pb2.LogLine:
    return admin_pb2.LogLine(at=row.at, level=row.level, source=row.source, message=row.message)


def _merged(own: Iterable[Any], jobs: Iterable[Any]) -> list[admin_pb2.LogLine]:
    """Both logs as one, by time (the job lines by their worker's clock); lines at the same time keep
    their order, the handler's first."""
    return sorted([*(_handler_line(r) for r in own), *(job_line(r) for r in jobs)], key=lambda line: line.at)
