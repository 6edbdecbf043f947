"""Text from a peer made safe to print: the one gate between what a server sends and the terminal
(netdist-admin), and between what workers send and the server's log (:mod:`netdist.log_format`).

Whatever the server sends (an old server, a hostile one, rows stored before
the field limits), a string reaches the terminal only through these
functions. Characters that can steer a terminal (the set in
:data:`netdist.fields.UNSAFE`: C0 and C1 controls with ESC, CR, LF and BEL,
DEL, the bidi overrides and isolates, the line separators) are shown as
visible escapes, ``\\x1b``, ``\\n``, ``\\u202e``, so a name can neither
move the cursor, set the window title, clear the screen nor forge a table
row, and the operator still sees that something odd was sent. Wide and
combining characters stay as they are.

Rich markup: the CLI puts server text into :class:`rich.text.Text`, which
never parses markup or emoji codes, and never into ``Console.print`` as a
plain string; so ``[bold]`` in data stays four brackets and letters, and no
``rich.markup.escape`` is needed (it would show its backslashes).
"""

from __future__ import annotations

import json
import re
from typing import Any

from netdist.fields import UNSAFE

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """One line: every unsafe character, line breaks included, as a visible escape."""
    return UNSAFE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Several lines (a traceback, a log message): kept as lines, each made :func:`printable`."""
    return "\n".join(printable(line) for line in text.replace("\r\n", "\n").split("\n"))


def printable_json(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as JSON text that is safe to print and still valid JSON, wide characters kept.

    ``json.dumps`` escapes C0 controls inside strings itself, so a raw line break is its indentation; DEL,
    C1 and the bidi controls become ``\\uXXXX`` escapes, which JSON reads back as the same characters."""
    return UNSAFE.sub(_json_escape, json.dumps(value, indent=indent, ensure_ascii=False))


def _json_escape(match: re.Match[str]) -> str:
    return match[0] if match[0] == "\n" else f"\\u{ord(match[0]):04x}"
