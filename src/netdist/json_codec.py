"""JSON on the per-job paths, without the json module's set-up on every call.

``json.dumps`` and ``JSONEncoder.encode`` build the encoder's C half anew for each value: for a small
job input or output that is two thirds of the cost (1.5 µs for ``None`` against 0.35 µs with the C
half kept). ``json.loads`` checks its keyword arguments first, and on bytes guesses their encoding
in Python. :class:`Encoder` keeps one C encoder; :data:`decode` is a decoder's own method, for str.
Both give the same text, values and errors as the json module's functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring_ascii,
)
from typing import Any, cast

decode: Callable[[str], Any] = json.JSONDecoder().decode
"""``json.loads`` for a str."""


class Encoder:
    """``json.JSONEncoder(allow_nan=..., separators=...).encode``, with its C half built once.

    That half keeps its circular-reference markers between calls, and an error can leave stale ones
    in it (which would take a later value holding the same objects for a cycle): it is built again
    after any error."""

    def __init__(self, *, allow_nan: bool = True, separators: tuple[str, str] = (", ", ": ")) -> None:
        self._allow_nan = allow_nan
        self._item_separator, self._key_separator = separators
        self._encode = self._build()

    def _build(self) -> Callable[[Any, int], Any]:
        if c_make_encoder is None:  # an interpreter without the C accelerator
            python = json.JSONEncoder(allow_nan=self._allow_nan, separators=(self._item_separator, self._key_separator))
            return lambda value, _level: (python.encode(value),)
        return cast(
            Callable[[Any, int], Any],
            c_make_encoder(
                {},
                _not_json,
                encode_basestring_ascii,
                None,
                self._key_separator,
                self._item_separator,
                False,
                False,
                self._allow_nan,
            ),
        )

    def encode(self, value: Any) -> str:
        try:
            return "".join(self._encode(value, 0))
        except BaseException:
            self._encode = self._build()
            raise


def _not_json(value: Any) -> Any:
    """``JSONEncoder.default``: what the encoder cannot encode."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


dumps = Encoder().encode
"""``json.dumps`` with its defaults, the same text."""
