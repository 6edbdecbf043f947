"""How netdist-server and netdist-worker write their logs: each record made safe to print.

A log line may quote what a network peer sent: a job's error message (a worker's), a worker's name, what
a job logged. The terminal or pager that shows the log must not be steered by it, nor show a line the
peer forged: every character that could steer it (ESC, BEL, CR, DEL, the C1 controls, the bidi controls,
the line separators: :data:`netdist.fields.UNSAFE`) is shown as a visible escape, as netdist-admin shows
a server's text (:mod:`netdist.printable`), and a record of several lines (a traceback) keeps
them, each after the first indented: no line a record holds starts where a record does.
"""

from __future__ import annotations

import logging
import sys

from netdist.printable import printable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTINUATION = "  "
"""What each line of a record after its first starts with."""


class PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:  # the common case: one line
            return printable(text)
        first, *rest = text.replace("\r\n", "\n").split("\n")
        return "\n".join([printable(first), *(CONTINUATION + printable(line) for line in rest)])


def configure(level: int | str) -> None:
    """The root logger writes to stderr through a :class:`PrintableFormatter`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
