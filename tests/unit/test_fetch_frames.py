"""Fetch answers encoded by hand (server/fetch_frames.py) are what protobuf makes of the same message."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from netdist.api.v1 import packages_pb2
from netdist.server.fetch_frames import _passing, frame, read_frame


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 1024 * 1024])
@pytest.mark.parametrize("total", [0, 1, 300, 50 * 1024 * 1024, 2**40])
def test_a_frame_is_the_protobuf_encoding_of_the_message(size: int, total: int) -> None:
    chunk = os.urandom(size)
    expected = packages_pb2.FetchResponse(chunk=chunk, total_size=total)
    assert frame(chunk, total) == expected.SerializeToString()
    decoded = packages_pb2.FetchResponse.FromString(frame(chunk, total))
    assert decoded.chunk == chunk and decoded.total_size == total


def test_the_serializer_passes_bytes_and_serializes_messages() -> None:
    serialize = _passing(packages_pb2.FetchResponse.SerializeToString)
    assert serialize(b"\x0a\x01x") == b"\x0a\x01x"
    message = packages_pb2.FetchResponse(chunk=b"abc", total_size=3)
    assert serialize(message) == message.SerializeToString()


def test_frames_read_through_one_reused_buffer_carry_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(2500)
    (tmp_path / "blob").write_bytes(data)
    buffer = bytearray(1000)
    with (tmp_path / "blob").open("rb", buffering=0) as stream:
        assert isinstance(stream, io.RawIOBase)
        frames = [read_frame(stream, buffer, len(data))] + [read_frame(stream, buffer) for _ in range(3)]
    messages = [packages_pb2.FetchResponse.FromString(f) for f in frames]
    assert [len(m.chunk) for m in messages] == [1000, 1000, 500, 0]
    assert b"".join(m.chunk for m in messages) == data
    assert [m.total_size for m in messages] == [2500, 0, 0, 0]
