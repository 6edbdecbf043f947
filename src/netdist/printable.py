"""Printable text: what a name or a setting may hold, so that no terminal acts on it.

Refused are the C0 controls (U+0000 to U+001F: escape sequences, carriage
return, backspace), DEL (U+007F), the C1 controls (U+0080 to U+009F, CSI among
them) and the Unicode bidi controls (U+061C, U+200E, U+200F, U+202A to U+202E,
U+2066 to U+2069), which reorder what a terminal shows (Trojan Source,
CVE-2021-42574). Everything else, any script and any emoji, is fine.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def control_character(text: str) -> str | None:
    """The first control character of ``text``, described (``U+001B at position 3``); None if there is none."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start()}"
