"""The executor child's encoder of a job's output: the text ``json.JSONEncoder`` makes, and its errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netdist.worker.child import OutputEncoder

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
    assert OutputEncoder().encode(value) == REFERENCE.encode(value)


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
        OutputEncoder().encode(value)
    with pytest.raises(error) as theirs:
        REFERENCE.encode(value)
    assert str(ours.value) == str(theirs.value)


def test_after_a_failed_output_the_next_ones_encode_as_before() -> None:
    """A failed output leaves the encoder's circular-reference markers behind; the encoder after it
    starts clean, so the same objects, fixed, are not taken for a cycle."""
    encoder = OutputEncoder()
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
