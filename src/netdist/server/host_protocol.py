"""The channel between the server and a handler host, as typed messages.

One JSON object per line, never pickle; :mod:`netdist.server.host` writes the
requests and reads the rest, :mod:`netdist.server.host_child` the other way::

    server -> host   {"id": N, "op": "init", "entry", "handler", "handler_id", "job_name",
                                 "settings": {...}, "state": STATE_JSON}          Initialize
                     {"id": N, "op": "check", "entry", "settings": {...}}        CheckSettings
                     {"id": N, "op": "call", "name": "on_start"}                  CallHook
                     {"id": N, "op": "more"}                                      CreateMoreJobs
                     {"id": N, "op": "results",
                      "items": [[JOB_ID, INPUT_JSON, OUTPUT_JSON, EXTRA_JSON], ...]}   ProcessResults
                     {"id": N, "op": "failures",
                      "items": [[JOB_ID, INPUT_JSON, {"type", "message", "traceback"},
                                 EXTRA_JSON, ATTEMPTS], ...]}                     ProcessFailures
    host -> server   {"id": N, "ok": {"jobs": [[INPUT_JSON, EXTRA_JSON], ...], "state": STATE_JSON,
                                      "summary": TEXT, "total": N | null,
                                      "invalid": [JOB_ID, ...]}}                  HandlerUpdate
                     {"id": N, "error": {"type", "message", "traceback"}}         HandlerRaised
                     {"log": {"level", "message"}}                                HostLog

Each request gets exactly one reply with its id. Values the handler sees
(inputs, outputs, extras, its state) travel as JSON text inside the JSON, so
the server stores them without parsing them. The per-job items are
NamedTuples (cheap: a batch holds up to 500), the messages frozen dataclasses.
A line that is none of these raises :class:`~netdist.jsonline.MalformedLineError`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, ClassVar, NamedTuple

from netdist.jsonline import (
    MalformedLineError,
    get_int,
    get_list,
    get_object,
    get_optional_int,
    get_str,
    load_object,
    preview,
)


class Hook(enum.StrEnum):
    """The handler's lifecycle methods the server calls by name."""

    ON_START = "on_start"
    ON_STOP = "on_stop"
    ON_FINISHED = "on_finished"


# -- requests ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Initialize:
    """Import the handler class, bind it to its settings and state, call ``initialize``."""

    OP: ClassVar[str] = "init"
    entry: str
    """``module:Class`` in the package's wheels."""
    handler: str
    """The handler's name in its package (names its logger)."""
    handler_id: str
    job_name: str
    settings: dict[str, Any]
    state_json: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "handler": self.handler,
            "handler_id": self.handler_id,
            "job_name": self.job_name,
            "settings": self.settings,
            "state": self.state_json,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Initialize:
        return cls(
            entry=get_str(obj, "entry"),
            handler=get_str(obj, "handler"),
            handler_id=get_str(obj, "handler_id"),
            job_name=get_str(obj, "job_name"),
            settings=get_object(obj, "settings"),
            state_json=get_str(obj, "state"),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckSettings:
    """Import the handler class and check custom settings against its ``settings_class``; no instance is
    made, ``initialize`` is not called. The reply is an empty HandlerUpdate, or HandlerRaised
    (``SettingsError`` for a bad setting)."""

    OP: ClassVar[str] = "check"
    entry: str
    settings: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"entry": self.entry, "settings": self.settings}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> CheckSettings:
        return cls(entry=get_str(obj, "entry"), settings=get_object(obj, "settings"))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallHook:
    """Call one lifecycle method of the handler."""

    OP: ClassVar[str] = "call"
    hook: Hook

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.hook.value}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> CallHook:
        name = get_str(obj, "name")
        try:
            return cls(hook=Hook(name))
        except ValueError:
            raise MalformedLineError(f"unknown hook {name!r}") from None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CreateMoreJobs:
    """Call ``create_more_jobs``."""

    OP: ClassVar[str] = "more"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> CreateMoreJobs:
        return cls()


class StoredResult(NamedTuple):
    """A stored result for ``process_result``; the texts as the store holds them."""

    job_id: int
    input_json: str
    output_json: str
    """What the worker sent: the handler host checks that it is JSON."""
    extra_json: str


class StoredFailure(NamedTuple):
    """A job that failed for good, for ``process_failure``."""

    job_id: int
    input_json: str
    error_type: str
    error_message: str
    error_traceback: str
    extra_json: str
    attempts: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessResults:
    """Hand stored results to ``process_result``, in order; with ``more``, call ``create_more_jobs``
    after them (one round trip where two would go; the reply's ``more_jobs`` counts what it added)."""

    OP: ClassVar[str] = "results"
    items: tuple[StoredResult, ...]
    more: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"items": self.items}  # NamedTuples encode as JSON lists
        if self.more:
            wire["more"] = True
        return wire

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ProcessResults:
        return cls(items=tuple([_result(item) for item in get_list(obj, "items")]), more=obj.get("more") is True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessFailures:
    """Hand jobs that failed for good to ``process_failure``, in order."""

    OP: ClassVar[str] = "failures"
    items: tuple[StoredFailure, ...]

    def to_wire(self) -> dict[str, Any]:
        error = ("type", "message", "traceback")
        return {
            "items": [
                [f.job_id, f.input_json, dict(zip(error, f[2:5], strict=True)), f.extra_json, f.attempts]
                for f in self.items
            ]
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ProcessFailures:
        return cls(items=tuple(_failure(item) for item in get_list(obj, "items")))


HostRequest = Initialize | CheckSettings | CallHook | CreateMoreJobs | ProcessResults | ProcessFailures
_REQUESTS: dict[str, type[HostRequest]] = {
    cls.OP: cls for cls in (Initialize, CheckSettings, CallHook, CreateMoreJobs, ProcessResults, ProcessFailures)
}


def _result(item: Any) -> StoredResult:
    if not (
        type(item) is list
        and len(item) == 4
        and type(item[0]) is int
        and type(item[1]) is type(item[2]) is type(item[3]) is str
    ):
        raise MalformedLineError(f"a result item must be [job id, input, output, extra], not {preview(repr(item))}")
    return StoredResult(item[0], item[1], item[2], item[3])


def _failure(item: Any) -> StoredFailure:
    if not (
        isinstance(item, list)
        and len(item) == 5
        and type(item[0]) is int
        and isinstance(item[1], str)
        and isinstance(item[2], dict)
        and isinstance(item[3], str)
        and type(item[4]) is int
    ):
        raise MalformedLineError(
            f"a failure item must be [job id, input, error, extra, attempts], not {preview(repr(item))}"
        )
    error = item[2]
    return StoredFailure(
        item[0],
        item[1],
        get_str(error, "type"),
        get_str(error, "message"),
        get_str(error, "traceback"),
        item[3],
        item[4],
    )


# -- what the host writes ------------------------------------------------------------


class NewJob(NamedTuple):
    """A job the handler enqueued."""

    input_json: str
    extra_json: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerUpdate:
    """The reply to a request the handler's code completed: what it did, to commit together."""

    jobs: tuple[NewJob, ...] = ()
    state_json: str
    summary: str
    total: int | None
    invalid: tuple[int, ...] = ()
    """Results whose output was not JSON (``ProcessResults`` only)."""
    more_jobs: int | None = None
    """Of ``jobs``, how many ``create_more_jobs`` added (``ProcessResults`` with ``more`` only)."""

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "jobs": self.jobs,
            "state": self.state_json,
            "summary": self.summary,
            "total": self.total,
            "invalid": self.invalid,
        }
        if self.more_jobs is not None:
            wire["more_jobs"] = self.more_jobs
        return wire

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> HandlerUpdate:
        jobs = get_list(obj, "jobs")  # up to thousands: checked in one pass, built in another
        if not all([type(j) is list and len(j) == 2 and type(j[0]) is str and type(j[1]) is str for j in jobs]):
            bad = next(j for j in jobs if not (type(j) is list and len(j) == 2 and all(type(v) is str for v in j)))
            raise MalformedLineError(f"a new job must be [input, extra], not {preview(repr(bad))}")
        invalid = get_list(obj, "invalid")
        if not all(type(i) is int for i in invalid):
            raise MalformedLineError(f"'invalid' must hold job ids, not {preview(repr(invalid))}")
        return cls(
            jobs=tuple([NewJob(i, e) for i, e in jobs]),
            state_json=get_str(obj, "state"),
            summary=get_str(obj, "summary"),
            total=get_optional_int(obj, "total"),
            invalid=tuple(invalid),
            more_jobs=get_optional_int(obj, "more_jobs"),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerRaised:
    """The reply to a request the handler's code raised on."""

    type: str
    message: str
    traceback: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> HandlerRaised:
        return cls(type=get_str(obj, "type"), message=get_str(obj, "message"), traceback=get_str(obj, "traceback"))


HostReply = HandlerUpdate | HandlerRaised


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostLog:
    """A record the handler logged, between replies."""

    level: str
    message: str


# -- encode and decode -----------------------------------------------------------------


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def encode_request(request_id: int, request: HostRequest) -> bytes:
    return _line({"id": request_id, "op": request.OP, **request.to_wire()})


def decode_request(line: bytes | str) -> tuple[int, HostRequest]:
    """A request line as the handler host reads it: its id and the request."""
    try:
        obj = load_object(line)
        request_id = get_int(obj, "id")
        op = get_str(obj, "op")
        cls = _REQUESTS.get(op)
        if cls is None:
            raise MalformedLineError(f"unknown op {op!r}")
        return request_id, cls.from_wire(obj)
    except MalformedLineError as exc:
        raise MalformedLineError(f"malformed request to the handler host: {exc}: {preview(line)}") from None


def encode_reply(request_id: int, reply: HostReply) -> bytes:
    key = "ok" if isinstance(reply, HandlerUpdate) else "error"
    return _line({"id": request_id, key: reply.to_wire()})


def encode_log(record: HostLog) -> bytes:
    return _line({"log": {"level": record.level, "message": record.message}})


def decode_from_host(line: bytes | str) -> tuple[int, HostReply] | HostLog:
    """A line the handler host wrote: a reply with its request's id, or a log record."""
    try:
        obj = load_object(line)
        if "log" in obj:
            record = get_object(obj, "log")
            return HostLog(level=get_str(record, "level"), message=get_str(record, "message"))
        request_id = get_int(obj, "id")
        if "ok" in obj:
            return request_id, HandlerUpdate.from_wire(get_object(obj, "ok"))
        if "error" in obj:
            return request_id, HandlerRaised.from_wire(get_object(obj, "error"))
        raise MalformedLineError("neither 'ok' nor 'error' nor 'log'")
    except MalformedLineError as exc:
        raise MalformedLineError(f"malformed line from the handler host: {exc}: {preview(line)}") from None
