"""The handler host: a child process running one handler instance.

Started by :mod:`netdist.server.host` with the package's wheels on
``PYTHONPATH``. Speaks :mod:`netdist.server.host_protocol`: requests on stdin,
replies and log lines on the original stdout (fd 1 is pointed at stderr so a
stray ``print`` in handler code cannot corrupt the protocol). Nothing is pickled.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import traceback
from typing import Any, BinaryIO, assert_never

import netdist
from netdist import json_codec
from netdist.handler import Handler, JobFailure, parse_settings
from netdist.parent_death import exit_with_parent, parent_pid_from
from netdist.server.host_protocol import (
    CallHook,
    CheckSettings,
    CreateMoreJobs,
    HandlerRaised,
    HandlerUpdate,
    HostLog,
    HostReply,
    HostRequest,
    Initialize,
    NewJob,
    ProcessFailures,
    ProcessResults,
    decode_request,
    encode_log,
    encode_reply,
    request_frame,
)
from netdist.wire import MAX_INPUT_BYTES


class _ProtocolLog(logging.Handler):
    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.write(encode_log(HostLog(level=record.levelname.lower(), message=self.format(record))))
        self.out.flush()


class _Host:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.handler: Handler[Any] | None = None
        self.new_jobs: list[NewJob] = []

    def _enqueue(self, job_input: Any, extra: Any) -> None:
        text = json_codec.dumps(job_input)
        if len(text) > MAX_INPUT_BYTES:  # it could not travel to a worker in one message
            raise ValueError(
                f"InputTooLarge: the job's input is {len(text)} bytes of JSON, the limit is {MAX_INPUT_BYTES}"
            )
        self.new_jobs.append(NewJob(text, json_codec.dumps(extra)))

    def _update(
        self, invalid: tuple[int, ...] = (), more_jobs: int | None = None, seconds: float | None = None
    ) -> HandlerUpdate:
        """What the handler did since the last reply: its new jobs, its state, its figures."""
        handler = self.handler
        assert handler is not None
        jobs, self.new_jobs = self.new_jobs, []
        summary = handler.summary()
        total = handler.total_job_count()
        if total is not None and type(total) is not int:
            raise TypeError(f"total_job_count() returned {total!r}, not an int or None")
        return HandlerUpdate(
            jobs=tuple(jobs),
            state_json=json.dumps(handler.state),
            summary="" if summary is None else str(summary),
            total=total,
            invalid=invalid,
            more_jobs=more_jobs,
            seconds=seconds,
        )

    def handle(self, request: HostRequest) -> HandlerUpdate:
        """The dispatch table: one branch per request of the protocol."""
        if isinstance(request, Initialize):
            self.handler = self._initialize(request)
            return self._update()
        if isinstance(request, CheckSettings):
            settings_class = _handler_class(request.entry).settings_class
            if settings_class is not None:
                parse_settings(settings_class, request.settings)
            return HandlerUpdate(state_json="{}", summary="", total=None)
        handler = self.handler
        if handler is None:
            raise RuntimeError(f"{type(request).__name__} before Initialize")
        if isinstance(request, CallHook):
            getattr(handler, request.hook.value)()  # Hook names exactly these three methods
            return self._update()
        if isinstance(request, CreateMoreJobs):
            handler.create_more_jobs()
            return self._update()
        if isinstance(request, ProcessResults):
            started = time.perf_counter()
            invalid = self._process_results(handler, request)
            seconds = time.perf_counter() - started
            if not request.more:
                return self._update(invalid=invalid, seconds=seconds)
            before = len(self.new_jobs)
            handler.create_more_jobs()
            return self._update(invalid=invalid, more_jobs=len(self.new_jobs) - before, seconds=seconds)
        if isinstance(request, ProcessFailures):
            started = time.perf_counter()
            self._process_failures(handler, request)
            return self._update(seconds=time.perf_counter() - started)
        assert_never(request)

    def _initialize(self, request: Initialize) -> Handler[Any]:
        obj = _handler_class(request.entry)
        log = logging.getLogger(f"netdist.handler.{request.handler}")
        log.setLevel(logging.INFO)
        log.addHandler(_ProtocolLog(self.out))
        log.propagate = False
        handler: Handler[Any] = obj()
        handler._bind(
            handler_id=request.handler_id,
            job_name=request.job_name,
            raw_settings=request.settings,
            log=log,
            enqueue=self._enqueue,
            state=json.loads(request.state_json),
            new_run=request.new_run,
        )
        handler.initialize()
        return handler

    @staticmethod
    def _process_results(handler: Handler[Any], request: ProcessResults) -> tuple[int, ...]:
        """Feed the results to the handler; returns those whose output is not JSON."""
        invalid = []
        decode = json_codec.decode
        for job_id, job_input, output, extra in request.items:
            try:
                value = decode(output)
            except ValueError:
                invalid.append(job_id)
                continue
            handler.process_result(decode(job_input), value, decode(extra))
        return tuple(invalid)

    @staticmethod
    def _process_failures(handler: Handler[Any], request: ProcessFailures) -> None:
        for item in request.items:
            failure = JobFailure(
                type=item.error_type,
                message=item.error_message,
                traceback=item.error_traceback,
                attempts=item.attempts,
            )
            handler.process_failure(json.loads(item.input_json), failure, json.loads(item.extra_json))

    def serve(self, requests: BinaryIO) -> None:
        for line in requests:
            frame = request_frame(line)  # a malformed request is a bug of the server: exit
            texts = requests.read(frame.text_bytes) if frame.text_bytes else b""
            if len(texts) < frame.text_bytes:
                return  # the server closed the pipe mid-frame: it is gone
            request_id, request = decode_request(frame, texts)
            reply: HostReply
            try:
                reply = self.handle(request)
            except Exception as exc:
                reply = HandlerRaised(type=type(exc).__name__, message=str(exc), traceback=handler_traceback(exc))
            self.out.write(encode_reply(request_id, reply))
            self.out.flush()


def _handler_class(entry: str) -> type[Handler[Any]]:
    module_name, _, attr = entry.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Handler)):
        raise TypeError(f"{entry} is not a subclass of netdist.handler.Handler")
    return obj


_OURS = os.path.dirname(netdist.__file__) + os.sep


def _theirs(frame: traceback.FrameSummary) -> bool:
    """A frame of the handler's code (or a library it calls), not netdist's nor the import machinery's."""
    return not (frame.filename.startswith(_OURS) or frame.filename.startswith("<frozen "))


def handler_traceback(exc: BaseException) -> str:
    """The traceback of an error raised in handler code, with the handler's own frames only: netdist's
    (this host, ``parse_settings``) and importlib's say nothing to the handler's author. An error with
    no frame of theirs (a bad setting) is its one ``Type: message`` line."""
    shown = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    todo = [shown]
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if _theirs(f)])
        todo.extend(t for t in (te.__cause__, te.__context__) if t is not None)
    return "".join(shown.format())


def main() -> None:
    # A handler hanging in its own code never reads stdin again: the kernel
    # ends this process with the server instead (see netdist.parent_death).
    exit_with_parent(parent_pid_from(sys.argv[1:]))
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _Host(protocol).serve(sys.stdin.buffer)


if __name__ == "__main__":
    main()
