"""The channel between the worker and an executor child, as typed messages.

Newline-delimited, never pickle. :mod:`netdist.worker.child_process` (the
worker's side) and :mod:`netdist.worker.child` (the child) both go through the
``encode`` methods and the two decoders here (:class:`WorkerDecoder`, :func:`decode_from_child`)::

    worker -> child  {"init": {"paths": [WHEEL_DIR, ...],             ChildInit, once, first (N and
                               "max_memory_bytes": N,                   capture_output optional)
                               "capture_output": true}}
                     {"load": {"no": N, "script": PATH,               LoadScript: import job script
                               "script_name": NAME}}                   number N (NAME optional)
                     [JOB_ID, LEASE_NO, ATTEMPT, N, HANDLER_ID,        RunJob: this line (N: its
                      JOB_NAME]                                         script), then
                     INPUT                                              its input, JSON text as leased
                     {"cancel": [JOB_ID, LEASE_NO]}                    CancelJob: skip a queued job
    child -> worker  {"ready": true}                                   ChildReady: a LoadScript is done
                     {"progress": {"job_id", "lease_no", "percent", "text"}}   JobProgressed
                     {"logs": {"job_id", "lease_no", "lines": [[AT, LEVEL, TEXT], ...],
                               "dropped": N}}                          JobLogged: what the job logged
                     = JOB_ID LEASE_NO DURATION_NS OUTPUT               JobOutput: OUTPUT is JSON text
                     {"job_id", "lease_no", "error": {"type", "message", "traceback"},
                      "duration_seconds"}                               JobFailed
                     {"job_id", "lease_no", "skipped": true}            JobSkipped: cancelled in time

The job's input and output travel as JSON text the worker never parses: it
copies the lease's input bytes into the line (so the input must hold no newline
byte: :func:`input_line`) and the output text into the result. The child
parses the input and encodes the output.

This is the per-job hot path, thousands of messages a second: the messages
are NamedTuples (a quarter of the cost of a frozen dataclass, as in
:mod:`netdist.worker.job`) naming a job by its two numbers, each encodes itself
with one format string, and a job's output line is decoded without a JSON
parser. A line that is none of these raises
:class:`~netdist.jsonline.MalformedLineError` naming what is wrong.

Kept free of heavy imports (no dataclasses, no pathlib, not even
:mod:`netdist.worker.job`): the child imports it before the job script, and
every new child pays for its imports.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from netdist import json_codec
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

_OUTPUT_PREFIX = b"="


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def input_line(raw: bytes) -> bytes:
    """A job's input (JSON text) as one line for the child.

    As is, unparsed, unless it holds a newline byte (whitespace in JSON text):
    then it is re-encoded, raising ValueError if it is not JSON. The child
    parses the input and reports ``InputNotJson`` for the rest.
    """
    if not raw:
        return b"null"
    if b"\n" in raw:
        return json.dumps(json.loads(raw)).encode()
    return raw


# -- worker -> child ------------------------------------------------------------------


class ChildInit(NamedTuple):
    """The child's one set of wheels, on ``sys.path`` for its whole life, and its limits."""

    paths: tuple[str, ...] = ()
    max_memory_bytes: int | None = None
    """The child caps its data size (RLIMIT_DATA) to this; None: no limit."""
    capture_output: bool = False
    """What jobs write to stdout and stderr is logged for the server too (``--capture-output``)."""

    def encode(self) -> bytes:
        init: dict[str, Any] = {"paths": self.paths}
        if self.max_memory_bytes is not None:
            init["max_memory_bytes"] = self.max_memory_bytes
        if self.capture_output:
            init["capture_output"] = True
        return _line({"init": init})


class LoadScript(NamedTuple):
    """Import a job script as number ``no`` (after the jobs sent before); the child answers ChildReady."""

    no: int
    script: str
    script_name: str = ""
    """The file name the script is compiled under (tracebacks show it); empty: its path."""

    def encode(self) -> bytes:
        load: dict[str, Any] = {"no": self.no, "script": self.script}
        if self.script_name:
            load["script_name"] = self.script_name
        return _line({"load": load})


class RunJob(NamedTuple):
    """Run one job (after the ones sent before it)."""

    job_id: int
    lease_no: int
    attempt: int
    script_no: int
    """The :class:`LoadScript` whose ``process`` runs it."""
    handler_id: str
    job_name: str
    input_json: bytes
    """One line of JSON text (see :func:`input_line`); the child parses it."""

    def encode(self) -> bytes:
        numbers = f"{self.job_id},{self.lease_no},{self.attempt},{self.script_no}"
        names = f"{encode_basestring_ascii(self.handler_id)},{encode_basestring_ascii(self.job_name)}"
        return f"[{numbers},{names}]\n".encode() + self.input_json + b"\n"


class CancelJob(NamedTuple):
    """Skip this job if it has not started (the child answers :class:`JobSkipped`)."""

    job_id: int
    lease_no: int

    def encode(self) -> bytes:
        return b'{"cancel":[%d,%d]}\n' % self


WorkerMessage = ChildInit | LoadScript | RunJob | CancelJob
_JOB_LINE = "a job line must be [job id, lease no, attempt, script no, handler id, job name]"


class WorkerDecoder:
    """Decodes what the worker writes, chunk by chunk: :meth:`feed` returns every message the chunks fed
    so far complete, so that the child hands its reader's work to its main thread once per chunk (one
    write of the worker holds up to a child's queue of jobs), not once per job."""

    __slots__ = ("_header", "_partial")

    def __init__(self) -> None:
        self._partial: list[bytes] = []
        """The start of a line not complete yet, in pieces (a long input comes in many chunks)."""
        self._header: tuple[bytes, tuple[int, int, int, int, str, str]] | None = None
        """A job line whose input line has not come yet (the line, and what it says)."""

    def feed(self, chunk: bytes) -> list[WorkerMessage]:
        """The messages ``chunk`` completes, in order; raises MalformedLineError at the first bad line."""
        if b"\n" not in chunk:
            if chunk:
                self._partial.append(chunk)
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        out: list[WorkerMessage] = []
        header = self._header
        for line in lines:  # this runs for every job
            if header is not None:
                out.append(RunJob(*header[1], line))
                header = None
            elif line[:1] == b"[":
                header = (line, _job_header(line))
            else:
                out.append(_control(line))
        self._header = header
        return out

    def end(self) -> None:
        """The stream ended: raises MalformedLineError if it ended inside a message."""
        if self._header is not None:
            raise _malformed("the job's input line is missing", self._header[0])
        if self._partial:
            raise _malformed("the line does not end", b"".join(self._partial))


def _malformed(why: object, line: bytes) -> MalformedLineError:
    return MalformedLineError(f"malformed line from the worker: {why}: {preview(line)}")


def _job_header(line: bytes) -> tuple[int, int, int, int, str, str]:
    """A job line's numbers and names (its input is the next line)."""
    try:
        header = json_codec.decode(line.decode())  # from str: bytes cost an encoding guess
    except ValueError as exc:
        raise _malformed(exc, line) from None
    if type(header) is not list or len(header) != 6:
        raise _malformed(_JOB_LINE, line)
    job_id, lease_no, attempt, script_no, handler_id, job_name = header
    if not (
        type(job_id) is type(lease_no) is type(attempt) is type(script_no) is int
        and type(handler_id) is type(job_name) is str
    ):
        raise _malformed(_JOB_LINE, line)
    return job_id, lease_no, attempt, script_no, handler_id, job_name


def _control(line: bytes) -> CancelJob | LoadScript | ChildInit:
    """A line that is not a job's: a cancel, a script load or the init."""
    try:
        obj = load_object(line)
        if "cancel" in obj:
            ref = get_list(obj, "cancel")
            if not (len(ref) == 2 and type(ref[0]) is int and type(ref[1]) is int):
                raise MalformedLineError("'cancel' must be [job id, lease no]")
            return CancelJob(ref[0], ref[1])
        if "load" in obj:
            load = get_object(obj, "load")
            return LoadScript(
                no=get_int(load, "no"),
                script=get_str(load, "script"),
                script_name=get_str(load, "script_name") if "script_name" in load else "",
            )
        if "init" in obj:
            init = get_object(obj, "init")
            paths = get_list(init, "paths") if "paths" in init else []
            if not all(isinstance(p, str) for p in paths):
                raise MalformedLineError("'paths' must hold strings")
            return ChildInit(
                paths=tuple(paths),
                max_memory_bytes=get_optional_int(init, "max_memory_bytes"),
                capture_output=init.get("capture_output") is True,
            )
        raise MalformedLineError("neither a job nor 'cancel' nor 'load' nor 'init'")
    except ValueError as exc:  # MalformedLineError, or the line's JSON
        raise _malformed(exc, line) from None


# -- child -> worker ------------------------------------------------------------------


class ChildReady(NamedTuple):
    """The child imported the job script of the oldest LoadScript not answered yet (or failed to: its jobs
    then fail)."""

    def encode(self) -> bytes:
        return b'{"ready":true}\n'


class JobProgressed(NamedTuple):
    """The latest progress of the running job (at most one a job per interval)."""

    job_id: int
    lease_no: int
    percent: float
    text: str

    def encode(self) -> bytes:
        item = {"job_id": self.job_id, "lease_no": self.lease_no, "percent": self.percent, "text": self.text}
        return _line({"progress": item})


class JobLogged(NamedTuple):
    """Lines the running job logged since the last such message, and how many it logged past the bound."""

    job_id: int
    lease_no: int
    lines: tuple[tuple[float, str, str], ...]
    """(Unix time, level, text) each."""
    dropped: int = 0

    def encode(self) -> bytes:
        item = {"job_id": self.job_id, "lease_no": self.lease_no, "lines": self.lines, "dropped": self.dropped}
        return _line({"logs": item})


class JobOutput(NamedTuple):
    """A job returned: its output as JSON text the child encoded."""

    job_id: int
    lease_no: int
    duration_seconds: float
    output_json: bytes

    def encode(self) -> bytes:
        head = b"= %d %d %d " % (self.job_id, self.lease_no, round(self.duration_seconds * 1e9))
        return head + self.output_json + b"\n"


class ChildError(NamedTuple):
    """Why a job failed in the child (the worker makes it a :class:`netdist.worker.job.JobError`)."""

    type: str
    message: str
    traceback: str = ""


class JobFailed(NamedTuple):
    """A job raised, its output was not JSON, its input was not JSON, or the script did not load."""

    job_id: int
    lease_no: int
    error: ChildError
    duration_seconds: float

    def encode(self) -> bytes:
        error = self.error
        return _line(
            {
                "job_id": self.job_id,
                "lease_no": self.lease_no,
                "error": {"type": error.type, "message": error.message, "traceback": error.traceback},
                "duration_seconds": self.duration_seconds,
            }
        )


class JobSkipped(NamedTuple):
    """A cancelled job that had not started: it did not run."""

    job_id: int
    lease_no: int

    def encode(self) -> bytes:
        return b'{"job_id":%d,"lease_no":%d,"skipped":true}\n' % self


ChildMessage = ChildReady | JobProgressed | JobLogged | JobOutput | JobFailed | JobSkipped


def decode_from_child(line: bytes) -> ChildMessage:
    """One line the child wrote, without its newline."""
    try:
        if line[:1] == _OUTPUT_PREFIX:  # the common case first
            _, id_text, lease_text, nanoseconds, output = line.split(b" ", 4)
            return JobOutput(int(id_text), int(lease_text), int(nanoseconds) / 1e9, output)
        obj = load_object(line)
        if "progress" in obj:
            item = get_object(obj, "progress")
            return JobProgressed(
                get_int(item, "job_id"), get_int(item, "lease_no"), get_float(item, "percent"), get_str(item, "text")
            )
        if "logs" in obj:
            return _job_logged(get_object(obj, "logs"))
        if obj.get("ready") is True:
            return ChildReady()
        job_id, lease_no = get_int(obj, "job_id"), get_int(obj, "lease_no")
        if obj.get("skipped") is True:
            return JobSkipped(job_id, lease_no)
        if "error" in obj:
            error = get_object(obj, "error")
            child_error = ChildError(get_str(error, "type"), get_str(error, "message"), get_str(error, "traceback"))
            return JobFailed(job_id, lease_no, child_error, get_float(obj, "duration_seconds"))
        raise MalformedLineError("neither 'error' nor 'skipped'")
    except ValueError as exc:  # MalformedLineError, or a number in an output line that is none
        raise MalformedLineError(f"malformed line from the executor child: {exc}: {preview(line)}") from None


def _job_logged(item: dict[str, Any]) -> JobLogged:
    lines = get_list(item, "lines")
    for line in lines:
        if not (
            isinstance(line, list)
            and len(line) == 3
            and type(line[0]) in (int, float)
            and type(line[1]) is str
            and type(line[2]) is str
        ):
            raise MalformedLineError("'lines' must hold [time, level, text] entries")
    return JobLogged(
        get_int(item, "job_id"),
        get_int(item, "lease_no"),
        tuple((float(at), level, text) for at, level, text in lines),
        get_int(item, "dropped"),
    )
