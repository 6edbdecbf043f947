"""JobService: the worker stream. Converts protobuf, calls the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

import netdist
from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.errors import NetDistError
from netdist.server.dispatcher import Dispatcher
from netdist.server.lease import Session

log = logging.getLogger("netdist.server.workers")
HELLO_TIMEOUT_SECONDS = 10.0


class JobService(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[jobs_pb2.WorkerMessage], context: grpc.aio.ServicerContext
    ) -> None:
        requests = aiter(request_iterator)
        try:
            first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT_SECONDS)
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a worker stream must start with Hello")
        if not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a worker stream must start with Hello")
        hello = first.hello
        problem = _check_hello(hello)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        session = Session(worker_id=hello.worker_id, name=hello.name or hello.hostname or hello.worker_id[:8],
                          labels=dict(hello.labels), slots=hello.slots, outbox=asyncio.Queue())
        try:
            await self.dispatcher.connect(session, [(r.job_id, r.lease_no) for r in hello.held], hello)
        except NetDistError as exc:
            await context.abort(exc.code, exc.message)
        log.info("worker %s (%s) connected from %s with %d slots", session.name, session.worker_id,
                 context.peer(), session.slots)
        await context.write(jobs_pb2.ServerMessage(welcome=jobs_pb2.Welcome(
            worker_id=session.worker_id, heartbeat_interval_seconds=self.dispatcher.heartbeat_interval_seconds,
            server_version=netdist.__version__)))
        reader = asyncio.create_task(self._read(requests, session))
        try:
            while (message := await session.outbox.get()) is not None:
                await context.write(message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self.dispatcher.disconnect(session)
            log.info("worker %s (%s) disconnected", session.name, session.worker_id)

    async def _read(self, requests: AsyncIterator[jobs_pb2.WorkerMessage], session: Session) -> None:
        pending: set[asyncio.Task[None]] = set()
        try:
            async for message in requests:
                kind = message.WhichOneof("kind")
                if kind == "credit":
                    self.dispatcher.add_credit(session, message.credit.count)
                elif kind == "results":
                    task = asyncio.create_task(self.dispatcher.on_results(session, message.results.items))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    task.add_done_callback(lambda t: _log_failure(t, session))
                elif kind == "progress":
                    self.dispatcher.on_progress(session, message.progress.items)
                elif kind == "heartbeat":
                    session.last_seen = time.monotonic()
                else:
                    log.warning("worker %s sent an unexpected %s message; ignored", session.name, kind)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        except grpc.aio.AioRpcError:
            pass
        except Exception:
            log.exception("worker %s stream failed", session.name)
        finally:
            session.close()


def _log_failure(task: asyncio.Task[None], session: Session) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("results from worker %s failed; it will send them again", session.name,
                  exc_info=task.exception())
        session.close()  # the worker reconnects and re-sends what was not acknowledged


def _check_hello(hello: jobs_pb2.Hello) -> str:
    if not hello.worker_id or len(hello.worker_id) > 64:
        return "Hello.worker_id must be 1 to 64 characters"
    if hello.slots < 1 or hello.slots > 4096:
        return f"Hello.slots must be between 1 and 4096, got {hello.slots}"
    if len(hello.name) > 200:
        return "Hello.name is longer than 200 characters"
    return ""
