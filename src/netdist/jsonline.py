"""Newline-delimited JSON between netdist and its own child processes.

Both internal channels (server <-> handler host, worker <-> executor child)
carry one JSON value per line, never pickle. This module holds what their
decoders share: :class:`MalformedLineError` for a line that is not a message, and
reads of a decoded object's fields that check the type, so that a peer writing
garbage gets a sentence naming the field instead of a ``KeyError`` far away.

Kept free of heavy imports: the executor child imports it before the job script.
"""

from __future__ import annotations

import json
from typing import Any

PREVIEW_BYTES = 200
"""How much of a malformed line an error quotes."""


class MalformedLineError(ValueError):
    """A line on an internal channel that is not a message of its protocol.

    Not a :class:`netdist.errors.NetDistError`: it never crosses gRPC (the side
    that reads it turns it into a failed handler or a failed job), and the
    executor child must not import grpc.
    """


def preview(line: bytes | str) -> str:
    """The start of ``line`` for an error message."""
    cut = line[:PREVIEW_BYTES]
    return repr(cut) + (" ..." if len(line) > PREVIEW_BYTES else "")


def load_object(line: bytes | str) -> dict[str, Any]:
    """A line holding one JSON object."""
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise MalformedLineError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise MalformedLineError(f"not a JSON object but {type(value).__name__}")
    return value


def _get(obj: dict[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise MalformedLineError(f"no {key!r}") from None


def _wrong(key: str, expected: str, value: Any) -> MalformedLineError:
    return MalformedLineError(f"{key!r} must be {expected}, not {type(value).__name__} {preview(repr(value))}")


def get_int(obj: dict[str, Any], key: str) -> int:
    value = _get(obj, key)
    if type(value) is not int:  # bool is an int subclass; JSON true is no number
        raise _wrong(key, "an integer", value)
    return value


def get_optional_int(obj: dict[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else get_int(obj, key)


def get_float(obj: dict[str, Any], key: str) -> float:
    value = _get(obj, key)
    if type(value) not in (int, float):
        raise _wrong(key, "a number", value)
    return float(value)


def get_str(obj: dict[str, Any], key: str) -> str:
    value = _get(obj, key)
    if not isinstance(value, str):
        raise _wrong(key, "a string", value)
    return value


def get_object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = _get(obj, key)
    if not isinstance(value, dict):
        raise _wrong(key, "an object", value)
    return value


def get_list(obj: dict[str, Any], key: str) -> list[Any]:
    value = _get(obj, key)
    if not isinstance(value, list):
        raise _wrong(key, "a list", value)
    return value
