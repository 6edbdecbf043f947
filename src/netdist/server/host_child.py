"""The handler host: a child process running one handler instance.

Started by :mod:`netdist.server.host` with the package's wheels on
``PYTHONPATH``. Speaks newline-delimited JSON: requests on stdin, replies and
log lines on the original stdout (fd 1 is pointed at stderr so a stray
``print`` in handler code cannot corrupt the protocol). Nothing is pickled.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from typing import Any, TextIO

from netdist.handler import Handler, JobFailure
from netdist.parent_death import exit_with_parent, parent_pid_from
from netdist.wire import MAX_INPUT_BYTES


class _ProtocolLog(logging.Handler):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        line = {"log": {"level": record.levelname.lower(), "message": self.format(record)}}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()


class _Host:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.handler: Handler[Any] | None = None
        self.new_jobs: list[tuple[str, str]] = []

    def _enqueue(self, job_input: Any, extra: Any) -> None:
        text = json.dumps(job_input)
        if len(text) > MAX_INPUT_BYTES:  # it could not travel to a worker in one message
            raise ValueError(f"InputTooLarge: the job's input is {len(text)} bytes of JSON, "
                             f"the limit is {MAX_INPUT_BYTES}")
        self.new_jobs.append((text, json.dumps(extra)))

    def _reply(self, **extra: Any) -> dict[str, Any]:
        assert self.handler is not None
        jobs, self.new_jobs = self.new_jobs, []
        return {
            "jobs": jobs,
            "state": json.dumps(self.handler.state),
            "summary": self.handler.summary(),
            "total": self.handler.total_job_count(),
            **extra,
        }

    def op_init(self, req: dict[str, Any]) -> dict[str, Any]:
        module_name, _, attr = req["entry"].partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, Handler)):
            raise TypeError(f"{req['entry']} is not a subclass of netdist.handler.Handler")
        log = logging.getLogger(f"netdist.handler.{req['handler']}")
        log.setLevel(logging.INFO)
        log.addHandler(_ProtocolLog(self.out))
        log.propagate = False
        handler = obj()
        handler._bind(
            handler_id=req["handler_id"], job_name=req["job_name"], raw_settings=req["settings"],
            log=log, enqueue=self._enqueue, state=json.loads(req["state"]),
        )
        self.handler = handler
        handler.initialize()
        return self._reply()

    def op_call(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.handler is not None
        name = req["name"]
        if name not in ("on_start", "on_stop", "on_finished"):
            raise ValueError(f"unknown hook {name!r}")
        getattr(self.handler, name)()
        return self._reply()

    def op_more(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.handler is not None
        self.handler.create_more_jobs()
        return self._reply()

    def op_results(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.handler is not None
        invalid = []
        for job_id, job_input, output, extra in req["items"]:
            try:
                value = json.loads(output)
            except ValueError:
                invalid.append(job_id)
                continue
            self.handler.process_result(json.loads(job_input), value, json.loads(extra))
        return self._reply(invalid=invalid)

    def op_failures(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.handler is not None
        for _job_id, job_input, error, extra, attempts in req["items"]:
            failure = JobFailure(
                type=error.get("type", ""), message=error.get("message", ""),
                traceback=error.get("traceback", ""), attempts=attempts,
            )
            self.handler.process_failure(json.loads(job_input), failure, json.loads(extra))
        return self._reply()

    def serve(self, requests: TextIO) -> None:
        for line in requests:
            req = json.loads(line)
            try:
                ok = getattr(self, f"op_{req['op']}")(req)
                reply: dict[str, Any] = {"id": req["id"], "ok": ok}
            except Exception as exc:
                reply = {
                    "id": req["id"],
                    "error": {
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "traceback": traceback.format_exc(),
                    },
                }
            self.out.write(json.dumps(reply) + "\n")
            self.out.flush()


def main() -> None:
    # A handler hanging in its own code never reads stdin again: the kernel
    # ends this process with the server instead (see netdist.parent_death).
    exit_with_parent(parent_pid_from(sys.argv[1:]))
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _Host(protocol).serve(sys.stdin)


if __name__ == "__main__":
    main()
