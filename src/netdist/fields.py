"""Text fields a peer sends: their limits, and the characters an identifier may not hold.

Every string a worker sends that the server stores or shows has a limit here,
in one place. Identifiers (a worker's id, name, hostname, label keys and
values) are refused when too long or when they hold a character that can
steer a terminal; descriptive text (versions, platform, progress text, a
failed job's error) is data: it is clipped, and the one-line kinds are
stripped of those characters, but never refused.

The characters: C0 controls (ESC, CR, LF, BEL, ...), DEL, C1 controls (CSI
is U+009B), the Unicode bidirectional embeddings, overrides and isolates
(the "Trojan Source" set, CVE-2021-42574) with the bidi marks, and the line
and paragraph separators. Wide and combining characters are ordinary text.
Job-script names and settings are refused on the same set (jobscript.py).

The admin CLI shows what the server sends through
:mod:`netdist.printable`, which uses the same set, so that text
stored before these limits, or sent by a hostile server, is safe too.
"""

from __future__ import annotations

import re

from netdist.errors import InvalidArgumentError
from netdist.wire import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ERROR_TYPE_CHARS,
    MAX_PROGRESS_TEXT_CHARS,
    MAX_TRACEBACK_CHARS,
)

MAX_WORKER_ID = 64
MAX_NAME = 200
MAX_HOSTNAME = 200
MAX_LABELS = 64
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 200
MAX_VERSION = 50
"""netdist's and Python's version strings."""
MAX_PLATFORM = 200
MAX_PROGRESS_TEXT = MAX_PROGRESS_TEXT_CHARS
MAX_REASON = 200
"""Why a worker hands jobs back."""
MAX_ERROR_TYPE = MAX_ERROR_TYPE_CHARS
MAX_ERROR_MESSAGE = MAX_ERROR_MESSAGE_CHARS
MAX_TRACEBACK = MAX_TRACEBACK_CHARS
"""A failed job's error: its type, message and traceback, as the worker clips them to fit the wire (wire.py);
the server clips again, for a worker that did not."""

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""One character that must not reach a terminal as it is."""
_SPACE_LIKE = re.compile("[\t\n\v\f\r\u2028\u2029]")


def control_character(text: str) -> str | None:
    """The first character of ``text`` that must not reach a terminal, described (``U+001B at position 3``);
    None if there is none."""
    found = UNSAFE.search(text)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start()}"


def check_identifier(field: str, value: str, limit: int, *, empty_ok: bool = True) -> str:
    """``value`` if it is a safe identifier of at most ``limit`` characters; else InvalidArgumentError naming ``field``.

    The message never repeats the value (it may be what must not be shown)."""
    if len(value) > limit:
        raise InvalidArgumentError(f"{field} is longer than {limit} characters ({len(value)})")
    if not value and not empty_ok:
        raise InvalidArgumentError(f"{field} is empty")
    bad = control_character(value)
    if bad is not None:
        raise InvalidArgumentError(
            f"{field} holds a control character ({bad}); names, hostnames and labels must be printable text"
        )
    return value


def clean_text(value: str, limit: int) -> str:
    """One line of data: clipped to ``limit`` characters, whitespace controls as spaces, other controls dropped."""
    clipped = value[:limit]  # first: the work below is bounded by the limit, not by what was sent
    return UNSAFE.sub("", _SPACE_LIKE.sub(" ", clipped))
