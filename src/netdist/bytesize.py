"""Byte sizes as people write them on a command line: ``512M``, ``1G``, ``1048576``."""

from __future__ import annotations

import re

import click

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``512M`` -> 536870912; the units are powers of 1024 (K, M, G, T; ``MiB`` and ``MB`` alike)."""
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a size (e.g. 1048576, 512K, 512M, 2G)")
    return int(found.group(1)) * _UNITS[found.group(2).upper()]


def format_size(n: int) -> str:
    """A size for people: ``512 MiB``, ``1.5 GiB``, ``300 bytes``."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} bytes"


class ByteSize(click.ParamType[int, object]):
    """A click parameter taking a byte size (``--max-upload-bytes 512M``)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
