"""``@to_status`` on a real grpc.aio server: every method shape answers an error the same way.

The four shapes of gRPC (unary and streamed, each way) and the two ways to
answer a stream (yield, or ``context.write`` as ``JobService.Connect`` does)
each raise a NetDistError after a first answer, or a plain bug; the client sees
the error's code, message and class name, or INTERNAL with nothing of the bug.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from netdist.errors import PermissionDeniedError
from netdist.server.grpc_errors import ERROR_CLASS_KEY, to_status

SERVICE = "test.Shapes"


class Shapes:
    """Each method answers b"first" once, then raises what the request names."""

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def _raise(request: bytes) -> None:
        if request == b"refuse":
            raise PermissionDeniedError("worker w is disabled")
        raise RuntimeError("secret detail of a bug")

    @to_status
    async def UnaryUnary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._raise(request)
        return b""

    @to_status
    async def UnaryStream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        self._raise(request)

    @to_status
    async def StreamUnary(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        async for request in requests:
            self._raise(request)
        return b""

    @to_status
    async def StreamStream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            yield b"first"
            self._raise(request)

    @to_status
    async def StreamWrite(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        async for request in requests:
            await context.write(b"first")
            self._raise(request)


def _handlers(shapes: Shapes) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UnaryUnary": grpc.unary_unary_rpc_method_handler(shapes.UnaryUnary),
            "UnaryStream": grpc.unary_stream_rpc_method_handler(shapes.UnaryStream),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(shapes.StreamUnary),
            "StreamStream": grpc.stream_stream_rpc_method_handler(shapes.StreamStream),
            "StreamWrite": grpc.stream_stream_rpc_method_handler(shapes.StreamWrite),
        },
    )


async def _call(channel: grpc.aio.Channel, method: str, request: bytes) -> tuple[list[bytes], grpc.aio.AioRpcError]:
    path = f"/{SERVICE}/{method}"
    answers: list[bytes] = []
    try:
        if method == "UnaryUnary":
            answers.append(await channel.unary_unary(path)(request))
        elif method == "UnaryStream":
            async for answer in channel.unary_stream(path)(request):
                answers.append(answer)
        elif method == "StreamUnary":
            answers.append(await channel.stream_unary(path)(iter([request])))
        else:
            async for answer in channel.stream_stream(path)(iter([request])):
                answers.append(answer)
    except grpc.aio.AioRpcError as exc:
        return answers, exc
    raise AssertionError(f"{method} answered {answers} without an error")


@pytest.mark.parametrize("method", ["UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream", "StreamWrite"])
def test_every_shape_answers_an_error_with_its_status(method: str, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(Shapes()),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                answers, refused = await _call(channel, method, b"refuse")
                assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
                assert refused.details() == "worker w is disabled"
                assert (ERROR_CLASS_KEY, "PermissionDeniedError") in tuple(refused.trailing_metadata() or ())
                assert answers == ([] if method in ("UnaryUnary", "StreamUnary") else [b"first"])

                _, bug = await _call(channel, method, b"bug")
                assert bug.code() is grpc.StatusCode.INTERNAL
                assert bug.details() == f"internal error in {method}; see the server log"
                assert "secret detail" not in str(bug.trailing_metadata())
        finally:
            await server.stop(None)

    with caplog.at_level(logging.ERROR, logger="netdist.server"):
        asyncio.run(run())
    logged = [r for r in caplog.records if r.name == "netdist.server"]
    assert [r.getMessage() for r in logged] == [f"{method} failed"]  # the bug, with its traceback; not the refusal
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], RuntimeError)


def test_the_decorator_keeps_the_shape_grpc_looks_at() -> None:
    """grpc.aio iterates an async generator and awaits a coroutine: the wrapper must be the same kind."""
    assert inspect.isasyncgenfunction(Shapes.UnaryStream) and inspect.isasyncgenfunction(Shapes.StreamStream)
    assert inspect.iscoroutinefunction(Shapes.StreamWrite) and inspect.iscoroutinefunction(Shapes.UnaryUnary)
