"""Hypothesis strategies for any protobuf message of the API, from its descriptor.

Random messages reach every field: numbers at their edges, strings with
control characters, bidi overrides and long runs, bytes that look like zips
and JSON, unknown enum values, oneofs, repeated and map fields. ``mutated``
takes a valid message and changes, removes or duplicates some of its fields,
which reaches the checks past the first one a random message trips.
"""

from __future__ import annotations

from typing import Any, cast

import hypothesis.strategies as st
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

_INT32 = st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 4096, 4097]) | st.integers(-(2**31), 2**31 - 1)
_INT64 = st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 10**9]) | st.integers(-(2**63), 2**63 - 1)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
_DOUBLE = st.floats(allow_nan=True, allow_infinity=True)
_NASTY = st.sampled_from(
    [
        "",
        "\x1b[2J\x1b]0;owned\x07",
        "a\nforged row",
        "\r",
        "\u202etxt.exe",
        "\x00",
        "..",
        "../../etc/passwd",
        "# /// script\n" * 50,
        "[bold]markup[/]",
        "ok",
        "x" * 5000,
    ]
)
_TEXT = _NASTY | st.text(max_size=60)
_BYTES = st.sampled_from(
    [b"", b"PK\x03\x04" + b"\x00" * 40, b"{}", b'{"i": 1}', b"null", b"\xff\xfe", b"\n"]
) | st.binary(max_size=200)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return _INT32
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return _INT64
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t == FieldDescriptor.TYPE_FLOAT:
        return _FLOAT
    if t == FieldDescriptor.TYPE_DOUBLE:
        return _DOUBLE
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return _BYTES
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)  # known values and unknown ones
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """A random message of this type: a random subset of its fields set, one per oneof."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        used_oneofs: set[str] = set()
        for field in descriptor.fields:
            if field.containing_oneof is not None:
                if field.containing_oneof.name in used_oneofs or not draw(st.booleans()):
                    continue
                used_oneofs.add(field.containing_oneof.name)
            elif not draw(st.booleans()):
                continue
            _fill(draw, msg, field, depth)
        return msg

    return build()


def _fill(draw: st.DrawFn, msg: Message, field: FieldDescriptor, depth: int) -> None:
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        container = getattr(msg, field.name)
        for _ in range(draw(st.integers(0, 3))):
            container[draw(_scalar(key_field))] = draw(_scalar(value_field))
        return
    if field.is_repeated:
        container = getattr(msg, field.name)
        for _ in range(draw(st.integers(0, 4))):
            if is_message:
                if depth < 3:
                    container.add().CopyFrom(draw(message(_nested(field), depth + 1)))
            else:
                container.append(draw(_scalar(field)))
        return
    if is_message:
        if depth < 3:
            getattr(msg, field.name).CopyFrom(draw(message(_nested(field), depth + 1)))
        return
    setattr(msg, field.name, draw(_scalar(field)))


def mutated(valid: Message) -> st.SearchStrategy[Message]:
    """A valid message with some fields replaced by random values or cleared."""
    descriptor = valid.DESCRIPTOR
    if not descriptor.fields:
        return st.just(valid)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = type(valid)()
        msg.CopyFrom(valid)
        fields = cast(list[FieldDescriptor], list(descriptor.fields))
        for field in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique_by=lambda f: f.name)):
            if draw(st.booleans()):
                msg.ClearField(field.name)
            else:
                msg.ClearField(field.name)
                _fill(draw, msg, field, 1)
        return msg

    return build()


def raw() -> st.SearchStrategy[bytes]:
    """Bytes that may not even decode as protobuf."""
    return _BYTES | st.binary(min_size=1, max_size=2000)


def _nested(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type
