"""Job scripts: the metadata block, read without running the script.

A job script is a Python file with a PEP 723 style block::

    # /// script
    # [tool.netdist]
    # package = "primes"
    # handler = "PrimeCounter"
    # job = "primes below 1e6"
    # max-parallel-jobs = 8
    # [tool.netdist.settings]
    # limit = 1000000
    # ///
    def process(job_input, ctx): ...

Every key is checked here; a wrong one raises :class:`JobScriptError` naming
the key and the problem. See docs/job-scripts.md for the reference.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from datetime import datetime, time
from typing import Any

from croniter import croniter

from netdist import pycheck
from netdist.errors import JobScriptError
from netdist.fields import control_character

_START = re.compile(r"# /// ([a-zA-Z0-9-]+)")
_CLOSE = "# ///"
_SELECTOR_KEYS = ("name", "id", "label")
MAX_TEXT_CHARS = 200
"""Longest string value in [tool.netdist] (names, schedule, windows, zones, selectors)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientSelector:
    """Matches workers by name (regular expression), id, or label (``k`` or ``k=v``)."""

    name: str | None = None
    id: str | None = None
    label: str | None = None

    def matches(self, *, worker_id: str, worker_name: str, labels: Mapping[str, str]) -> bool:
        if self.id is not None:
            return worker_id == self.id
        if self.name is not None:
            return re.search(self.name, worker_name) is not None
        key, sep, value = (self.label or "").partition("=")
        return key in labels and (not sep or labels[key] == value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IdleWindow:
    """A daily time window in which the handler hands out no jobs."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # across midnight

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobSettings:
    """The ``[tool.netdist]`` table of a job script, checked."""

    package: str
    handler: str
    job: str
    auto_start: bool = False
    schedule: str | None = None
    idle_time: IdleWindow | None = None
    time_zone: str | None = None
    job_timeout_seconds: float | None = None
    max_parallel_jobs: int | None = None
    max_sequenced_errors: int | None = None
    max_attempts: int = 3
    clients_allowed: tuple[ClientSelector, ...] = ()
    clients_denied: tuple[ClientSelector, ...] = ()
    priority: float = 1.0
    max_jobs_per_client: int | None = None
    max_time_per_client_per_day_seconds: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The settings as the job script spelled them (for display)."""
        out: dict[str, Any] = {}
        for key, field in _KEYS.items():
            value = getattr(self, field)
            if isinstance(value, IdleWindow):
                value = str(value)
            elif isinstance(value, tuple):
                value = [{k: v for k, v in dataclasses.asdict(s).items() if v is not None} for s in value]
            out[key] = value
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobScript:
    settings: JobSettings
    custom: Mapping[str, Any]
    source: str


_KEYS = {
    "package": "package",
    "handler": "handler",
    "job": "job",
    "auto-start": "auto_start",
    "schedule": "schedule",
    "idle-time": "idle_time",
    "time-zone": "time_zone",
    "job-timeout": "job_timeout_seconds",
    "max-parallel-jobs": "max_parallel_jobs",
    "max-sequenced-errors": "max_sequenced_errors",
    "max-attempts": "max_attempts",
    "clients-allowed": "clients_allowed",
    "clients-denied": "clients_denied",
    "priority": "priority",
    "max-jobs-per-client": "max_jobs_per_client",
    "max-time-per-client-per-day": "max_time_per_client_per_day_seconds",
}


def read_block(source: str) -> dict[str, Any]:
    """The TOML of the ``script`` metadata block, parsed."""
    blocks = [lines for kind, lines in metadata_blocks(source) if kind == "script"]
    if not blocks:
        raise JobScriptError(
            "no metadata block: the script needs a '# /// script' ... '# ///' block with a [tool.netdist] table"
        )
    if len(blocks) > 1:
        raise JobScriptError("more than one '# /// script' block")
    content = "".join((line[2:] if line.startswith("# ") else line[1:]) + "\n" for line in blocks[0])
    try:
        return tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise JobScriptError(f"metadata block is not valid TOML: {exc}") from None
    except RecursionError:
        raise JobScriptError("metadata block is not valid TOML: nested too deeply") from None


def metadata_blocks(source: str) -> list[tuple[str, list[str]]]:
    """Every metadata block of ``source`` as (type, content lines), in linear time.

    Finds what PEP 723's reference regular expression finds,
    ``(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\\s(?P<content>(^#(| .*)$\\s)+)^# ///$``
    with ``finditer``: a line ``# /// TYPE``, one or more lines that are ``#``
    or start with ``# ``, then a line ``# ///``; the block ends at the last
    such line before the comment lines stop. That expression backtracks over
    every following comment line from each opening line (quadratic: 128 KB of
    ``# /// a`` lines took 20 s); here one backward pass records, for each
    run of comment lines, where its last closing line is.
    """
    lines = source.split("\n")
    n = len(lines)
    # A content line is "#" or "# ..." followed by a newline (the last piece has none).
    content = [i < n - 1 and (line == "#" or line.startswith("# ")) for i, line in enumerate(lines)]
    last_close = [-1] * n  # for a content line: the last closing line from it to just past its run
    for i in range(n - 1, -1, -1):
        if not content[i]:
            continue
        after = last_close[i + 1] if content[i + 1] else (i + 1 if lines[i + 1] == _CLOSE else -1)
        last_close[i] = after if after != -1 else (i if lines[i] == _CLOSE else -1)
    blocks = []
    i = 0
    while i < n - 1:
        start = _START.fullmatch(lines[i])
        close = last_close[i + 1] if start and content[i + 1] else -1
        if start and close >= i + 2:
            blocks.append((start.group(1), lines[i + 1 : close]))
            i = close + 1
        else:
            i += 1
    return blocks


def parse(source: str, *, check_python: bool = True) -> JobScript:
    """Check a job script's metadata and (``check_python``) that it is Python defining ``process``.

    The metadata is read in linear time. The Python check parses the whole
    script, which can take seconds and much memory for a large one: the
    server leaves it to a child process (:mod:`netdist.server.script_check`).
    """
    data = read_block(source)
    tool = data.get("tool", {}).get("netdist") if isinstance(data.get("tool"), dict) else None
    if not isinstance(tool, dict):
        raise JobScriptError("metadata block has no [tool.netdist] table")
    raw = dict(tool)
    custom = raw.pop("settings", {})
    if not isinstance(custom, dict):
        raise JobScriptError("'settings': expected a table ([tool.netdist.settings])")
    unknown = [k for k in raw if k not in _KEYS]
    if unknown:
        raise JobScriptError(f"unknown key {_short(unknown[0])}; known keys: {', '.join(_KEYS)}")
    values = {_KEYS[k]: _CHECKS[k](k, v) for k, v in raw.items()}
    for key in ("package", "handler", "job"):
        if key not in values:
            raise JobScriptError(f"missing key {key!r} in [tool.netdist]")
    settings = JobSettings(**values)
    _check_cross(settings)
    if check_python and (problem := pycheck.problem(source)) is not None:
        raise JobScriptError(problem)
    return JobScript(settings=settings, custom=custom, source=source)


def _check_cross(settings: JobSettings) -> None:
    if settings.schedule is not None:
        zone = zoneinfo.ZoneInfo(settings.time_zone) if settings.time_zone else None
        croniter(settings.schedule, datetime.now(zone))


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JobScriptError(f"{key!r}: expected a non-empty string, got {_short(value)}")
    return _printable(repr(key), value.strip())


def _printable(where: str, text: str) -> str:
    """``text``, if it is short and holds no control character (it reaches logs and terminals)."""
    if len(text) > MAX_TEXT_CHARS:
        raise JobScriptError(f"{where}: {len(text)} characters is over the limit of {MAX_TEXT_CHARS}")
    control = control_character(text)
    if control is not None:
        raise JobScriptError(f"{where}: holds the control character {control}; only printable text is allowed")
    return text


def _short(value: Any) -> str:
    """``repr(value)``, cut short: a refused value is quoted in the message, not echoed whole."""
    text = repr(value)
    return text if len(text) <= MAX_TEXT_CHARS else f"{text[:MAX_TEXT_CHARS]}... ({len(text)} characters)"


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise JobScriptError(f"{key!r}: expected true or false, got {_short(value)}")
    return value


def _int_at_least(minimum: int) -> Any:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobScriptError(f"{key!r}: expected a whole number, got {_short(value)}")
        if value < minimum:
            raise JobScriptError(f"{key!r}: must be at least {minimum}, got {value}")
        return value

    return check


def _positive_seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobScriptError(f"{key!r}: expected a number of seconds, got {_short(value)}")
    if value <= 0:
        raise JobScriptError(f"{key!r}: must be more than 0 seconds, got {value}")
    return float(value)


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise JobScriptError(f"{key!r}: expected a number above 0, got {_short(value)}")
    return float(value)


def _schedule(key: str, value: Any) -> str:
    text = _text(key, value)
    if not croniter.is_valid(text):
        raise JobScriptError(f'{key!r}: {text!r} is not a valid cron expression (e.g. "*/5 * * * *")')
    return text


def _clock(key: str, text: str) -> time:
    try:
        hours, minutes = text.strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise JobScriptError(f"{key!r}: {text.strip()!r} is not a time of day as HH:MM") from None


def _idle_time(key: str, value: Any) -> IdleWindow:
    text = _text(key, value)
    start, sep, end = text.partition("-")
    if not sep:
        raise JobScriptError(f'{key!r}: expected a window like "22:00-06:00", got {text!r}')
    window = IdleWindow(start=_clock(key, start), end=_clock(key, end))
    if window.start == window.end:
        raise JobScriptError(f"{key!r}: the window {text!r} is empty (start equals end)")
    return window


def _time_zone(key: str, value: Any) -> str:
    text = _text(key, value)
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise JobScriptError(f'{key!r}: unknown time zone {text!r} (e.g. "Europe/Zurich")') from None
    return text


def _selectors(key: str, value: Any) -> tuple[ClientSelector, ...]:
    if not isinstance(value, list):
        raise JobScriptError(f'{key!r}: expected a list of selectors like [{{ name = "^lab-" }}]')
    out = []
    for i, item in enumerate(value):
        where = f"{key!r}[{i}]"
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in _SELECTOR_KEYS:
            raise JobScriptError(
                f"{where}: expected a table with one of {', '.join(_SELECTOR_KEYS)}, got {_short(item)}"
            )
        ((kind, pattern),) = item.items()
        if not isinstance(pattern, str) or not pattern:
            raise JobScriptError(f"{where}: {kind} must be a non-empty string, got {_short(pattern)}")
        _printable(f"{where}.{kind}", pattern)
        if kind == "name":
            try:
                re.compile(pattern)
            except re.error as exc:
                raise JobScriptError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
        out.append(ClientSelector(**{kind: pattern}))
    return tuple(out)


_CHECKS: dict[str, Any] = {
    "package": _text,
    "handler": _text,
    "job": _text,
    "auto-start": _bool,
    "schedule": _schedule,
    "idle-time": _idle_time,
    "time-zone": _time_zone,
    "job-timeout": _positive_seconds,
    "max-parallel-jobs": _int_at_least(1),
    "max-sequenced-errors": _int_at_least(1),
    "max-attempts": _int_at_least(1),
    "clients-allowed": _selectors,
    "clients-denied": _selectors,
    "priority": _positive_number,
    "max-jobs-per-client": _int_at_least(1),
    "max-time-per-client-per-day": _positive_seconds,
}
