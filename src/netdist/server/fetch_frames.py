"""``PackageService.Fetch`` answers encoded by hand: a blob's chunk goes on the wire with one copy.

Building a ``FetchResponse`` copies the chunk into the message and serializing
it copies it twice more; for a 50 MB environment those copies were most of the
server's time in a fetch (py-spy: memcpy and page faults under protobuf).
:func:`frame` writes the same bytes protobuf would (field 1 ``chunk``, field 2
``total_size``: a test decodes them with ``FetchResponse.FromString``) and
:class:`PassPreEncoded` lets an already encoded answer through the method's
serializer unchanged (any other answer is serialized as before).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

FETCH_METHOD = "/netdist.api.v1.PackageService/Fetch"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(chunk: bytes | memoryview, total_size: int = 0) -> bytes:
    """``FetchResponse(chunk=chunk, total_size=total_size)`` as protobuf encodes it (total_size >= 0)."""
    head = b"\x0a" + _varint(len(chunk)) if len(chunk) else b""
    tail = b"\x10" + _varint(total_size) if total_size else b""
    return b"".join((head, chunk, tail))


def read_frame(stream: io.RawIOBase, buffer: bytearray, total_size: int = 0) -> bytes:
    """The next chunk of ``stream`` framed, read through ``buffer`` (reused: no fresh pages for the read).

    For a thread: the join copies a megabyte without the GIL."""
    n = stream.readinto(buffer)
    return frame(memoryview(buffer)[:n], total_size)


def _passing(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serialized(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return serialized


class PassPreEncoded(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Fetch's serializer takes bytes from :func:`frame` as they are."""

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != FETCH_METHOD or handler.response_serializer is None:
            return handler
        return handler._replace(response_serializer=_passing(handler.response_serializer))
