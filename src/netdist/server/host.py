"""Parent side of a handler host: start the child, call it, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from netdist.errors import HandlerCodeError, HostDiedError
from netdist.jsonline import MalformedLineError
from netdist.parent_death import child_args
from netdist.server.host_protocol import (
    MAX_TEXT_BYTES,
    HandlerRaised,
    HandlerUpdate,
    HostLog,
    HostReply,
    HostRequest,
    ProcessResults,
    decode_from_host,
    encode_request,
    host_frame,
)

log = logging.getLogger("netdist.server.host")
_LINE_LIMIT = MAX_TEXT_BYTES


_KEPT = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT", "PYTHONHOME", "LD_LIBRARY_PATH"}
)
"""What Python and the C library need (SYSTEMROOT: Windows; PYTHONHOME and LD_LIBRARY_PATH: a Python
that needs them to start at all); LC_* are kept too."""


def handler_environment(environ: Mapping[str, str], python_path: Sequence[Path]) -> dict[str, str]:
    """The environment of a handler host: least privilege.

    Handler code runs on the server, as trusted as the admin who uploaded it,
    but it has no business with the server's settings: no NETDIST_* (the
    store's URL holds a password), no token, nothing else of the server's
    environment but what Python needs, and the wheels on PYTHONPATH.
    """
    env = {k: v for k, v in environ.items() if (k in _KEPT or k.startswith("LC_")) and not k.startswith("NETDIST")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in python_path)
    return env


class HostProcess:
    def __init__(self, proc: asyncio.subprocess.Process, on_log: Callable[[str, str], None]) -> None:
        self._proc = proc
        self._on_log = on_log
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[HostReply]] = {}
        self._broken: str | None = None
        """Why the host was killed for breaking the protocol, if it was."""
        self._lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read())
        self._stderr = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, *, python_path: list[Path], on_log: Callable[[str, str], None]) -> HostProcess:
        env = handler_environment(os.environ, python_path)
        # Called on the server's event loop, in its main thread: the host's
        # PDEATHSIG fires when the thread that forked it ends (netdist.parent_death). -P: the server's
        # start directory is not put on the path, where it would come before the package's wheels.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "netdist.server.host_child",
            *child_args(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=_LINE_LIMIT,
        )
        return cls(proc, on_log)

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def call(self, request: HostRequest, *, timeout_seconds: float | None = None) -> HandlerUpdate:
        """One request; raises HandlerCodeError or HostDiedError. A host that
        does not answer within ``timeout_seconds`` is killed."""
        async with self._lock:
            if self._proc.returncode is not None or self._reader.done():
                raise HostDiedError(self._exit_message(self._proc.returncode))
            req_id = next(self._ids)
            future: asyncio.Future[HostReply] = asyncio.get_running_loop().create_future()
            self._pending[req_id] = future
            assert self._proc.stdin is not None
            self._proc.stdin.write(encode_request(req_id, request))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self._proc.stdin.drain()  # a dead host is reported by the reader
            try:
                reply = await asyncio.wait_for(asyncio.shield(future), timeout_seconds)
            except TimeoutError:
                self._pending.pop(req_id, None)
                future.cancel()
                self.kill()
                raise HostDiedError(
                    f"handler did not answer {request.OP!r} within {timeout_seconds:g} s; its host was killed"
                ) from None
        if isinstance(reply, HandlerRaised):
            raise HandlerCodeError(reply.type, reply.message, reply.traceback)
        if reply.invalid:
            handed = {item.job_id for item in request.items} if isinstance(request, ProcessResults) else set()
            foreign = sorted(set(reply.invalid) - handed)
            if foreign:  # its save would mark other jobs failed, another handler's as well
                self._broken = f"it named results it was not handed as not JSON (jobs {foreign[:5]})"
                self.kill()
                raise HostDiedError(self._exit_message(None))
        return reply

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        try:
            async for line in self._proc.stdout:
                try:
                    frame = host_frame(line)
                    texts = await self._proc.stdout.readexactly(frame.text_bytes) if frame.text_bytes else b""
                    message = decode_from_host(frame, texts)
                except asyncio.IncompleteReadError:
                    return  # it ended mid-frame: its calls fail as it exits
                except MalformedLineError as exc:  # not our handler host any more: end it, fail its calls
                    log.error("%s; killing handler host %d", exc, self.pid)
                    self._broken = str(exc)
                    self.kill()
                    return
                if isinstance(message, HostLog):
                    self._on_log(message.level, message.message)
                    continue
                req_id, reply = message
                future = self._pending.pop(req_id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except asyncio.CancelledError:  # the loop ends with the host open: nothing will close it now
            self.kill()
            raise
        finally:
            code = await self._proc.wait()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(HostDiedError(self._exit_message(code)))
            self._pending.clear()

    def _exit_message(self, code: int | None) -> str:
        if self._broken is not None:
            return f"handler host was killed: {self._broken}"
        return f"handler host exited with code {code}"

    async def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        async for line in self._proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._on_log("info", text)

    def kill(self) -> None:
        """End a host that does not answer; its pending calls raise HostDiedError."""
        if self._proc.returncode is None:
            self._proc.kill()

    async def close(self, timeout: float = 5.0) -> None:
        if self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        for task in (self._reader, self._stderr):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 1.0)
