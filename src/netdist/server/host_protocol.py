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
                                      "invalid": [JOB_ID, ...], "more_jobs": N,   HandlerUpdate (the
                                      "seconds": S}}                               last two optional)
                     {"id": N, "error": {"type", "message", "traceback"}}         HandlerRaised
                     {"log": {"level", "message"}}                                HostLog

Each request gets exactly one reply with its id. Values the handler sees
(inputs, outputs, extras, its state) travel as JSON text, so the server stores
them without parsing them: inside the line as JSON strings when short, and from
TEXT_INLINE_MAX characters on as raw UTF-8 bytes after the line, where the line
holds the text's number instead (its position in ``"texts": [SIZE, ...]``, a key
of the line's object, the sizes in bytes of what follows it, in order)::

    {"id": 7, "op": "results", "items": [[41, 0, 1, "null"]], "texts": [1048576, 1048599]}\n
    <1048576 bytes: text 0><1048599 bytes: text 1>

Escaping a megabyte into a JSON line and parsing it back took the server and
the host several milliseconds a job each (bench/README.md). The per-job items
are NamedTuples (cheap: a batch holds up to 500), the messages frozen
dataclasses. A frame that is none of these raises
:class:`~netdist.jsonline.MalformedLineError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
from typing import Any, ClassVar, NamedTuple

from netdist.jsonline import (
    MalformedLineError,
    get_float,
    get_int,
    get_list,
    get_object,
    get_optional_int,
    get_str,
    load_object,
    preview,
)

TEXT_INLINE_MAX = 4096
"""Texts this many characters long or longer travel after the line, not inside it."""
MAX_TEXT_BYTES = 256 * 1024 * 1024
"""What the texts after one line from a host may hold together, as its line may (``host.py``)."""


class TextsOut:
    """The texts a frame being encoded puts after its line."""

    __slots__ = ("parts", "sizes")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.sizes: list[int] = []

    def put(self, text: str) -> str | int:
        """``text`` itself if it is short, else its number after the line."""
        if len(text) < TEXT_INLINE_MAX:
            return text
        data = text.encode("utf-8", "surrogatepass")
        self.parts.append(data)
        self.sizes.append(len(data))
        return len(self.sizes) - 1


class TextsIn:
    """The texts after a decoded frame's line."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, data: bytes = b"", sizes: tuple[int, ...] = ()) -> None:
        self._data = memoryview(data)
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self._offsets = offsets

    def get(self, value: Any, what: str) -> str:
        """The text ``value`` stands for: a string, or the number of a text after the line."""
        if type(value) is str:
            return value
        if type(value) is int and 0 <= value < len(self._offsets) - 1:
            try:
                return str(self._data[self._offsets[value] : self._offsets[value + 1]], "utf-8", "surrogatepass")
            except UnicodeDecodeError as exc:
                raise MalformedLineError(f"text {value} after the line is not UTF-8 ({exc})") from None
        raise MalformedLineError(
            f"{what} must be a string or the number of a text after the line, not {preview(repr(value))}"
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
    new_run: bool = False
    """This start begins a run (``Handler.new_run``)."""

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "handler": self.handler,
            "handler_id": self.handler_id,
            "job_name": self.job_name,
            "settings": self.settings,
            "state": texts.put(self.state_json),
            "new_run": self.new_run,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> Initialize:
        return cls(
            entry=get_str(obj, "entry"),
            handler=get_str(obj, "handler"),
            handler_id=get_str(obj, "handler_id"),
            job_name=get_str(obj, "job_name"),
            settings=get_object(obj, "settings"),
            state_json=texts.get(obj.get("state"), "'state'"),
            new_run=obj.get("new_run") is True,
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckSettings:
    """Import the handler class and check custom settings against its ``settings_class``; no instance is
    made, ``initialize`` is not called. The reply is an empty HandlerUpdate, or HandlerRaised
    (``SettingsError`` for a bad setting)."""

    OP: ClassVar[str] = "check"
    entry: str
    settings: dict[str, Any]

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        return {"entry": self.entry, "settings": self.settings}

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> CheckSettings:
        return cls(entry=get_str(obj, "entry"), settings=get_object(obj, "settings"))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallHook:
    """Call one lifecycle method of the handler."""

    OP: ClassVar[str] = "call"
    hook: Hook

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        return {"name": self.hook.value}

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> CallHook:
        name = get_str(obj, "name")
        try:
            return cls(hook=Hook(name))
        except ValueError:
            raise MalformedLineError(f"unknown hook {name!r}") from None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CreateMoreJobs:
    """Call ``create_more_jobs``."""

    OP: ClassVar[str] = "more"

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> CreateMoreJobs:
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

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        items: Any = self.items  # NamedTuples encode as JSON lists
        if not all([len(i.input_json) + len(i.output_json) + len(i.extra_json) < TEXT_INLINE_MAX for i in items]):
            put = texts.put
            items = [(i.job_id, put(i.input_json), put(i.output_json), put(i.extra_json)) for i in items]
        wire: dict[str, Any] = {"items": items}
        if self.more:
            wire["more"] = True
        return wire

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> ProcessResults:
        items = get_list(obj, "items")
        return cls(items=tuple([_result(item, texts) for item in items]), more=obj.get("more") is True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessFailures:
    """Hand jobs that failed for good to ``process_failure``, in order."""

    OP: ClassVar[str] = "failures"
    items: tuple[StoredFailure, ...]

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        error = ("type", "message", "traceback")
        return {
            "items": [
                [
                    f.job_id,
                    texts.put(f.input_json),
                    dict(zip(error, f[2:5], strict=True)),
                    texts.put(f.extra_json),
                    f.attempts,
                ]
                for f in self.items
            ]
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> ProcessFailures:
        return cls(items=tuple(_failure(item, texts) for item in get_list(obj, "items")))


HostRequest = Initialize | CheckSettings | CallHook | CreateMoreJobs | ProcessResults | ProcessFailures
_REQUESTS: dict[str, type[HostRequest]] = {
    cls.OP: cls for cls in (Initialize, CheckSettings, CallHook, CreateMoreJobs, ProcessResults, ProcessFailures)
}


def _result(item: Any, texts: TextsIn) -> StoredResult:
    if type(item) is list and len(item) == 4 and type(item[0]) is int:
        if type(item[1]) is type(item[2]) is type(item[3]) is str:
            return StoredResult(item[0], item[1], item[2], item[3])
        with contextlib.suppress(MalformedLineError):
            return StoredResult(item[0], *(texts.get(v, "a text") for v in item[1:]))
    raise MalformedLineError(f"a result item must be [job id, input, output, extra], not {preview(repr(item))}")


def _failure(item: Any, texts: TextsIn) -> StoredFailure:
    if not (
        isinstance(item, list)
        and len(item) == 5
        and type(item[0]) is int
        and isinstance(item[2], dict)
        and type(item[4]) is int
    ):
        raise MalformedLineError(
            f"a failure item must be [job id, input, error, extra, attempts], not {preview(repr(item))}"
        )
    error = item[2]
    return StoredFailure(
        item[0],
        texts.get(item[1], "a failure's input"),
        get_str(error, "type"),
        get_str(error, "message"),
        get_str(error, "traceback"),
        texts.get(item[3], "a failure's extra"),
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
    seconds: float | None = None
    """How long the handler's code took over the batch (``ProcessResults``, ``ProcessFailures``), timed in
    the host: what the next batch is sized by, without the call's way to and from the host, which on a
    busy machine (a host waiting for a core, the server's loop for its turn) can take longer than the
    handler's work and does not grow with the batch."""

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        jobs: Any = self.jobs  # NamedTuples encode as JSON lists
        if not all([len(j.input_json) + len(j.extra_json) < TEXT_INLINE_MAX for j in jobs]):
            jobs = [(texts.put(j.input_json), texts.put(j.extra_json)) for j in jobs]
        wire = {
            "jobs": jobs,
            "state": texts.put(self.state_json),
            "summary": self.summary,
            "total": self.total,
            "invalid": self.invalid,
        }
        if self.more_jobs is not None:
            wire["more_jobs"] = self.more_jobs
        if self.seconds is not None:
            wire["seconds"] = self.seconds
        return wire

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> HandlerUpdate:
        jobs = get_list(obj, "jobs")  # up to thousands: checked in one pass, built in another
        if all([type(j) is list and len(j) == 2 and type(j[0]) is str and type(j[1]) is str for j in jobs]):
            new_jobs = tuple([NewJob(i, e) for i, e in jobs])
        else:
            new_jobs = tuple([_new_job(j, texts) for j in jobs])
        invalid = get_list(obj, "invalid")
        if not all(type(i) is int for i in invalid):
            raise MalformedLineError(f"'invalid' must hold job ids, not {preview(repr(invalid))}")
        return cls(
            jobs=new_jobs,
            state_json=texts.get(obj.get("state"), "'state'"),
            summary=get_str(obj, "summary"),
            total=get_optional_int(obj, "total"),
            invalid=tuple(invalid),
            more_jobs=get_optional_int(obj, "more_jobs"),
            seconds=_optional_seconds(obj),
        )


def _optional_seconds(obj: dict[str, Any]) -> float | None:
    if obj.get("seconds") is None:
        return None
    seconds = get_float(obj, "seconds")
    if not 0.0 <= seconds < math.inf:
        raise MalformedLineError(f"'seconds' must be a duration, not {preview(repr(seconds))}")
    return seconds


def _new_job(item: Any, texts: TextsIn) -> NewJob:
    if type(item) is list and len(item) == 2:
        with contextlib.suppress(MalformedLineError):
            return NewJob(texts.get(item[0], "a text"), texts.get(item[1], "a text"))
    raise MalformedLineError(f"a new job must be [input, extra], not {preview(repr(item))}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerRaised:
    """The reply to a request the handler's code raised on."""

    type: str
    message: str
    traceback: str

    def to_wire(self, texts: TextsOut) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_wire(cls, obj: dict[str, Any], texts: TextsIn) -> HandlerRaised:
        return cls(type=get_str(obj, "type"), message=get_str(obj, "message"), traceback=get_str(obj, "traceback"))


HostReply = HandlerUpdate | HandlerRaised


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostLog:
    """A record the handler logged, between replies."""

    level: str
    message: str


# -- encode and decode -----------------------------------------------------------------


class Frame(NamedTuple):
    """A frame's line, decoded: what its texts must be read for."""

    obj: dict[str, Any]
    line: bytes | str
    text_sizes: tuple[int, ...]

    @property
    def text_bytes(self) -> int:
        """How many bytes of texts follow the line."""
        return sum(self.text_sizes)


def _frame(message: dict[str, Any], texts: TextsOut) -> bytes:
    if texts.sizes:
        message["texts"] = texts.sizes
    line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    return b"".join([line, *texts.parts]) if texts.parts else line


def _read_line(line: bytes | str, max_text_bytes: int | None) -> Frame:
    obj = load_object(line)
    sizes = obj.get("texts", [])
    if not (type(sizes) is list and all([type(n) is int and n >= 0 for n in sizes])):
        raise MalformedLineError(f"'texts' must be a list of sizes, not {preview(repr(sizes))}")
    frame = Frame(obj, line, tuple(sizes))
    if max_text_bytes is not None and frame.text_bytes > max_text_bytes:
        raise MalformedLineError(f"its texts would be {frame.text_bytes} bytes, over the {max_text_bytes} allowed")
    return frame


def _split(data: bytes | str) -> tuple[bytes | str, bytes]:
    """A whole frame in one piece: its line, and the texts after it."""
    if isinstance(data, str):
        return data, b""
    end = data.find(b"\n") + 1
    return (data, b"") if end == 0 else (data[:end], data[end:])


def _texts(frame: Frame, data: bytes) -> TextsIn:
    if len(data) != frame.text_bytes:
        raise MalformedLineError(f"{len(data)} bytes of texts after the line, where it says {frame.text_bytes}")
    return TextsIn(data, frame.text_sizes)


def encode_request(request_id: int, request: HostRequest) -> bytes:
    """A request's frame: its line and the texts after it."""
    texts = TextsOut()
    return _frame({"id": request_id, "op": request.OP, **request.to_wire(texts)}, texts)


def request_frame(line: bytes | str) -> Frame:
    """A request's line as the handler host reads it; then read ``text_bytes`` more for ``decode_request``."""
    try:
        return _read_line(line, None)
    except MalformedLineError as exc:
        raise MalformedLineError(f"malformed request to the handler host: {exc}: {preview(line)}") from None


def decode_request(frame: Frame | bytes | str, texts: bytes = b"") -> tuple[int, HostRequest]:
    """A request as the handler host reads it (a whole frame, or its line's Frame and its texts):
    its id and the request."""
    if not isinstance(frame, Frame):
        line, texts = _split(frame)
        frame = request_frame(line)
    try:
        obj = frame.obj
        request_id = get_int(obj, "id")
        op = get_str(obj, "op")
        cls = _REQUESTS.get(op)
        if cls is None:
            raise MalformedLineError(f"unknown op {op!r}")
        return request_id, cls.from_wire(obj, _texts(frame, texts))
    except MalformedLineError as exc:
        raise MalformedLineError(f"malformed request to the handler host: {exc}: {preview(frame.line)}") from None


def encode_reply(request_id: int, reply: HostReply) -> bytes:
    key = "ok" if isinstance(reply, HandlerUpdate) else "error"
    texts = TextsOut()
    return _frame({"id": request_id, key: reply.to_wire(texts)}, texts)


def encode_log(record: HostLog) -> bytes:
    return _frame({"log": {"level": record.level, "message": record.message}}, TextsOut())


def host_frame(line: bytes | str) -> Frame:
    """A line the handler host wrote, as the server reads it; then read ``text_bytes`` more (at most
    MAX_TEXT_BYTES) for ``decode_from_host``."""
    try:
        return _read_line(line, MAX_TEXT_BYTES)
    except MalformedLineError as exc:
        raise MalformedLineError(f"malformed line from the handler host: {exc}: {preview(line)}") from None


def decode_from_host(frame: Frame | bytes | str, texts: bytes = b"") -> tuple[int, HostReply] | HostLog:
    """What the handler host wrote (a whole frame, or its line's Frame and its texts): a reply with
    its request's id, or a log record."""
    if not isinstance(frame, Frame):
        line, texts = _split(frame)
        frame = host_frame(line)
    try:
        obj = frame.obj
        if "log" in obj:
            record = get_object(obj, "log")
            return HostLog(level=get_str(record, "level"), message=get_str(record, "message"))
        request_id = get_int(obj, "id")
        if "ok" in obj:
            return request_id, HandlerUpdate.from_wire(get_object(obj, "ok"), _texts(frame, texts))
        if "error" in obj:
            return request_id, HandlerRaised.from_wire(get_object(obj, "error"), _texts(frame, texts))
        raise MalformedLineError("neither 'ok' nor 'error' nor 'log'")
    except MalformedLineError as exc:
        raise MalformedLineError(f"malformed line from the handler host: {exc}: {preview(frame.line)}") from None
