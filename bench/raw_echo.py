"""Raw gRPC on this machine, the yardstick of ``bench/scale.py payload``: a grpc.aio server echoing bytes.

    .venv/bin/python bench/raw_echo.py        # prints "port N", serves until stdin closes

One unary method ``/echo.Echo/Echo`` that answers the request's bytes as they came: no protobuf, no
store, no handler. ``bench/scale.py`` starts it, calls it from as many threads as netdist has
workers, and compares MB/s.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
METHOD = "/echo.Echo/Echo"


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def main() -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("echo.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"port {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main())
