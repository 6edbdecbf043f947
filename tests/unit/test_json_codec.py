"""netdist.json_codec: the text and errors of the json module's encoder, with its C half kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netdist.json_codec import Encoder, decode, dumps

REFERENCE = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

VALUES: list[Any] = [
    None,
    True,
    0,
    -5,
    2**70,
    1.5,
    1e300,
    'quote " newline \n é ☃',
    [1, {"a": [None, 2.25]}],
    (1, 2),
    {"b": 1, 2: "int key", 1.5: "float key", True: None, None: 1},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_an_output_is_the_text_the_standard_encoder_makes(value: Any) -> None:
    assert Encoder(allow_nan=False, separators=(",", ":")).encode(value) == REFERENCE.encode(value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        ({"k": float("-inf")}, ValueError),
        ({1, 2}, TypeError),
        (object(), TypeError),
        ({(1, 2): 3}, TypeError),
    ],
    ids=repr,
)
def test_what_is_not_json_raises_what_the_standard_encoder_raises(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as ours:
        Encoder(allow_nan=False, separators=(",", ":")).encode(value)
    with pytest.raises(error) as theirs:
        REFERENCE.encode(value)
    assert str(ours.value) == str(theirs.value)


def test_after_a_failed_output_the_next_ones_encode_as_before() -> None:
    """A failed output leaves the encoder's circular-reference markers behind; the encoder after it
    starts clean, so the same objects, fixed, are not taken for a cycle."""
    encoder = Encoder(allow_nan=False, separators=(",", ":"))
    holder: dict[str, list[Any]] = {"a": [float("nan")]}
    with pytest.raises(ValueError, match="Out of range float"):
        encoder.encode(holder)
    holder["a"][0] = 1.0
    assert encoder.encode(holder) == '{"a":[1.0]}'
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        encoder.encode(circular)
    circular.clear()
    assert encoder.encode(circular) == "[]"


@pytest.mark.parametrize("value", [*VALUES, float("nan"), {"k": float("inf")}], ids=repr)
def test_dumps_is_json_dumps(value: Any) -> None:
    assert dumps(value) == json.dumps(value)


DECODED = [
    "null",
    '{"a": [1, 2.5, "x"]}',
    " [true] ",
    "[true] ",
    "\t[true]",
    "NaN",
    "-Infinity",
    '"\\u00e9"',
    '"\\ud800"',
    "123456789012345678901234567890",
    "1e400",
    "-0",
    '{"a":1,"a":2}',
    '{"i":5}',
    "[" * 50 + "]" * 50,
]


@pytest.mark.parametrize("text", DECODED)
def test_decode_is_json_loads(text: str) -> None:
    ours, theirs = decode(text), json.loads(text)
    assert repr(ours) == repr(theirs) and type(ours) is type(theirs)


@pytest.mark.parametrize("text", ["", " ", "{", "[1,", "[1] [2]", "1 2", "nul", '{"a" 1}', "[1]x", '"\x01"'])
def test_decode_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        decode(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)
