"""The API for package authors: subclass :class:`Handler`, write ``process``.

A package is a wheel that registers handler classes in the ``netdist.handlers``
entry-point group::

    [project.entry-points."netdist.handlers"]
    PrimeCounter = "primes.handler:PrimeCounter"

The server runs each handler instance in a child process of its own. Job
inputs, outputs and extras are JSON values (dict, list, str, int, float,
bool, None).
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

__all__ = [
    "Handler",
    "JobContext",
    "JobFailure",
    "JsonValue",
    "SettingsError",
]

JsonValue = Any
"""Any value that survives ``json.dumps``/``json.loads`` unchanged."""


class SettingsError(ValueError):
    """A custom setting from ``[tool.netdist.settings]`` is missing or of the wrong type."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobFailure:
    """Why a job failed, as ``process_failure`` receives it."""

    type: str
    message: str
    traceback: str = ""
    attempts: int = 1


class JobContext(Protocol):
    """What ``process(job_input, ctx)`` gets on the worker."""

    job_id: int
    attempt: int
    handler_id: str
    job_name: str
    log: logging.Logger

    def progress(self, percent: float, text: str = "") -> None:
        """Report progress; cheap to call often (the worker coalesces)."""


S = TypeVar("S")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check one custom setting against its annotated type."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(name, value, hint)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SettingsError(f"setting {name!r}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(f"{name}[]", v, item) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"setting {name!r}: expected a table, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise SettingsError(f"setting {name!r}: expected int, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise SettingsError(f"setting {name!r}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _coerce_union(name: str, value: Any, hint: Any) -> Any:
    for option in typing.get_args(hint):
        if option is type(None) and value is None:
            return None
        try:
            return _coerce(name, value, option)
        except SettingsError:
            continue
    raise SettingsError(f"setting {name!r}: {value!r} is not {hint}")


def parse_settings(cls: type[S], raw: Mapping[str, Any]) -> S:
    """Build the settings dataclass ``cls`` from the raw table, checking types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k.replace("-", "_") not in known]
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field = key.replace("-", "_")
        values[field] = _coerce(key, value, hints[field])
    try:
        return cls(**values)
    except TypeError as exc:
        raise SettingsError(str(exc)) from None


class Handler(Generic[S]):
    """Server-side logic of one kind of job.

    Override what you need. The server calls, in its handler host process:

    - ``initialize()`` once when the instance starts (settings are ready);
    - ``total_job_count()`` for progress displays (None if unknown);
    - ``create_more_jobs()`` whenever the queue runs low: call ``enqueue``.
      A call that enqueues nothing while no job is pending finishes the handler;
    - ``process_result(input, output, extra)`` once per successful job;
    - ``process_failure(input, failure, extra)`` when a job failed
      ``max-attempts`` times and will not be retried;
    - ``on_start()``, ``on_stop()``, ``on_finished()`` around the life cycle;
    - ``summary()`` for a one-line account of the results so far.

    Set ``settings_class`` to a dataclass to get ``self.settings`` typed and
    checked from the job script's ``[tool.netdist.settings]`` table; otherwise
    ``self.settings`` is that table as a dict.
    """

    settings_class: ClassVar[type[Any] | None] = None

    settings: S
    state: dict[str, JsonValue]
    """JSON state kept by the server: saved with each batch of processed
    results in the same transaction, restored when the host restarts."""
    log: logging.Logger
    job_name: str
    handler_id: str
    new_run: bool = False
    """True when this start begins a run: the instance's first, or one after its last run went to the end
    (a ``schedule``'s start, or ``handlers start``, of a finished instance). False when it goes on with a
    run that did not end: resumed after a stop or pause, a server restart, a new package version or job
    script. ``self.state`` is kept either way: a handler that keeps its place in it (a cursor) starts over
    in ``initialize`` or ``on_start`` when this is True."""

    def _bind(
        self,
        *,
        handler_id: str,
        job_name: str,
        raw_settings: Mapping[str, Any],
        log: logging.Logger,
        enqueue: Callable[[JsonValue, JsonValue], None],
        state: dict[str, JsonValue],
        new_run: bool = False,
    ) -> None:
        self.handler_id = handler_id
        self.new_run = new_run
        self.job_name = job_name
        self.log = log
        self._sink = enqueue
        self.state = state
        cls = type(self).settings_class
        self.settings = parse_settings(cls, raw_settings) if cls else dict(raw_settings)  # type: ignore[assignment]

    def enqueue(self, job_input: JsonValue, extra: JsonValue = None) -> None:
        """Add one job; ``extra`` comes back with its result but never reaches a worker."""
        self._sink(job_input, extra)

    def initialize(self) -> None:
        """Prepare state; called once per start of the handler host."""

    def total_job_count(self) -> int | None:
        return None

    def create_more_jobs(self) -> None:
        """Enqueue the next jobs. Enqueue nothing when there is no more work."""

    def process_result(self, job_input: JsonValue, output: JsonValue, extra: JsonValue) -> None:
        """Handle one job's output."""

    def process_failure(self, job_input: JsonValue, failure: JobFailure, extra: JsonValue) -> None:
        """A job failed for good (``max-attempts`` reached)."""
        self.log.error("job failed after %d attempts: %s: %s", failure.attempts, failure.type, failure.message)

    def on_start(self) -> None:
        """The handler started running."""

    def on_stop(self) -> None:
        """The handler was stopped, paused or is being replaced by a new version."""

    def on_finished(self) -> None:
        """All jobs are processed and no more will come."""

    def summary(self) -> str:
        """One line on the results so far, shown by ``netdist-admin handlers list``."""
        return ""
