"""``identify`` and ``on_revoked`` as a servicer sees them, on an in-process server behind the AuthInterceptor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from netdist.api.v1 import admin_pb2
from netdist.channel import ClientSecurity, aio_channel
from netdist.server.auth import AuthInterceptor, Refusal, identify, on_revoked
from netdist.server.store import credentials
from netdist.server.store.engine import default_url, open_engine
from netdist.server.store.facade import Store
from netdist.server.tokens import TokenCache, digest, new_token

SERVICE = "netdist.api.v1.AdminService"


async def get_status(
    request: admin_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
) -> admin_pb2.GetStatusResponse:
    who = identify(context)
    return admin_pb2.GetStatusResponse(address=f"{who.name}/{who.role}/{who.peer}")


async def get_handler_log(
    request: admin_pb2.GetHandlerLogRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[admin_pb2.LogLine]:
    """Follows forever; with ``follow`` it asks to be closed in order when its token is revoked."""
    closed = asyncio.Event()
    if request.follow:
        on_revoked(context, closed.set)
    yield admin_pb2.LogLine(message=identify(context).name)
    await closed.wait()
    yield admin_pb2.LogLine(message="closed in order")


def test_servicers_learn_who_called_and_revoked_streams_end(tmp_path: Path) -> None:  # noqa: PLR0915  (one story)
    store = Store(open_engine(default_url(tmp_path)))
    admin, viewer, follower = new_token(), new_token(), new_token()
    refusals: list[Refusal] = []

    async def scenario() -> None:
        for name, role, token in (("ops", "admin", admin), ("dash", "viewer", viewer), ("tail", "viewer", follower)):
            await store.write(credentials.add_token, name=name, role=role, sha256=digest(token))
        cache = TokenCache(store, refresh_seconds=0.05)
        await cache.start()
        server = grpc.aio.server(interceptors=[AuthInterceptor(cache, on_refusal=refusals.append)])
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "GetStatus": grpc.unary_unary_rpc_method_handler(
                            get_status,
                            request_deserializer=admin_pb2.GetStatusRequest.FromString,
                            response_serializer=admin_pb2.GetStatusResponse.SerializeToString,
                        ),
                        "GetHandlerLog": grpc.unary_stream_rpc_method_handler(
                            get_handler_log,
                            request_deserializer=admin_pb2.GetHandlerLogRequest.FromString,
                            response_serializer=admin_pb2.LogLine.SerializeToString,
                        ),
                    },
                )
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        address = f"127.0.0.1:{port}"

        def call(token: str | None, method: str, request: Any, response: Any) -> Any:
            channel = aio_channel(address, ClientSecurity(token=token))
            channels.append(channel)
            kind = channel.unary_stream if method == "GetHandlerLog" else channel.unary_unary
            return kind(
                f"/{SERVICE}/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )(request, metadata=ClientSecurity(token=token).metadata, timeout=10)

        channels: list[grpc.aio.Channel] = []
        try:
            reply = await call(viewer, "GetStatus", admin_pb2.GetStatusRequest(), admin_pb2.GetStatusResponse)
            name, role, peer = reply.address.split("/", 2)
            assert (name, role) == ("dash", "viewer") and peer.startswith("ipv4:127.0.0.1:")

            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call(
                    viewer, "ControlHandler", admin_pb2.ControlHandlerRequest(), admin_pb2.ControlHandlerResponse
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refusals[-1].token_name == "dash" and refusals[-1].peer.startswith("ipv4:127.0.0.1:")

            ordered = call(follower, "GetHandlerLog", admin_pb2.GetHandlerLogRequest(follow=True), admin_pb2.LogLine)
            blunt = call(admin, "GetHandlerLog", admin_pb2.GetHandlerLogRequest(follow=False), admin_pb2.LogLine)
            assert (await anext(aiter(ordered))).message == "tail"
            assert (await anext(aiter(blunt))).message == "ops"
            await store.write(credentials.revoke_token, "tail")
            await store.write(credentials.revoke_token, "ops")
            lines: list[str] = []

            async def read_on() -> None:
                async for line in ordered:
                    lines.append(line.message)

            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await read_on()
            assert lines == ["closed in order"]  # its closer ran: it ended in order, then the refusal
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED and "'tail' was revoked" in (
                ended.value.details() or ""
            )
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                async for _ in blunt:
                    pass
            assert cut.value.code() == grpc.StatusCode.UNAUTHENTICATED  # no closer: cancelled, then refused
        finally:
            for channel in channels:
                await channel.close()
            await server.stop(None)
            await cache.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        store.close()
