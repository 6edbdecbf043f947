"""A real handler host process driven through the typed protocol, and one that breaks it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from netdist.errors import HandlerCodeError, HostDiedError
from netdist.server.host import HostProcess
from netdist.server.host_protocol import (
    CallHook,
    CheckSettings,
    CreateMoreJobs,
    Hook,
    Initialize,
    NewJob,
    ProcessFailures,
    ProcessResults,
    StoredFailure,
    StoredResult,
)

HANDLER = """
from netdist.handler import Handler


class Counter(Handler):
    def initialize(self):
        self.state.setdefault("seen", [])

    def on_start(self):
        self.log.info("started %s", self.job_name)

    def create_more_jobs(self):
        if not self.state.get("made"):
            self.state["made"] = True
            self.enqueue({"n": 1}, extra="one")
            self.enqueue(2)

    def process_result(self, job_input, output, extra):
        self.state["seen"].append([job_input, output, extra])

    def process_failure(self, job_input, failure, extra):
        self.state["failed"] = [failure.type, failure.message, failure.attempts]

    def on_finished(self):
        raise RuntimeError("finished badly")

    def total_job_count(self):
        return 2

    def summary(self):
        return f"{len(self.state['seen'])} seen"
"""


def test_a_host_answers_each_request_with_what_the_handler_did(tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(HANDLER)
    logs: list[tuple[str, str]] = []

    async def main() -> None:
        host = await HostProcess.start(python_path=[tmp_path], on_log=lambda *line: logs.append(line))
        try:
            init = await host.call(
                Initialize(
                    entry="counter:Counter",
                    handler="counter",
                    handler_id="h1",
                    job_name="count",
                    settings={},
                    state_json='{"seen": [[0, 0, 0]]}',
                )
            )
            assert (init.jobs, init.state_json, init.summary, init.total) == ((), '{"seen": [[0, 0, 0]]}', "1 seen", 2)
            await host.call(CallHook(hook=Hook.ON_START))
            more = await host.call(CreateMoreJobs())
            assert more.jobs == (NewJob('{"n": 1}', '"one"'), NewJob("2", "null"))
            results = await host.call(
                ProcessResults(
                    items=(StoredResult(1, '{"n": 1}', '"ok"', '"one"'), StoredResult(2, "2", "{not json", "null"))
                )
            )
            assert results.invalid == (2,)
            assert results.summary == "2 seen"
            assert results.more_jobs is None  # not asked for more: create_more_jobs was not called
            both = await host.call(ProcessResults(items=(StoredResult(3, "3", "3", "null"),), more=True))
            assert both.summary == "3 seen" and both.more_jobs == 0 and both.jobs == ()  # it made its two already
            failures = await host.call(ProcessFailures(items=(StoredFailure(3, "3", "E", "m", "tb", "null", 4),)))
            assert '"failed": ["E", "m", 4]' in failures.state_json
            with pytest.raises(HandlerCodeError, match="RuntimeError: finished badly") as raised:
                await host.call(CallHook(hook=Hook.ON_FINISHED))
            assert "on_finished" in raised.value.traceback
        finally:
            await host.close()

    asyncio.run(main())
    assert ("info", "started count") in logs


BIG_HANDLER = """
from netdist.handler import Handler


class Echo(Handler):
    def process_result(self, job_input, output, extra):
        self.state["last"] = [len(job_input["pad"]), output[:3], len(output), extra]

    def create_more_jobs(self):
        self.enqueue({"pad": "y" * 2_000_000, "quote": '"'}, extra="é" * 5000)
"""


def test_megabyte_texts_cross_a_real_host_both_ways(tmp_path: Path) -> None:
    """An input and output of megabytes go to the host as raw bytes after the request's line, and its
    new job's input and its state come back the same way (host_protocol's texts), intact."""
    (tmp_path / "echo.py").write_text(BIG_HANDLER)
    big_input = json.dumps({"pad": "x" * 3_000_000})
    big_output = json.dumps("ü" * 1_000_000, ensure_ascii=False)

    async def main() -> None:
        host = await HostProcess.start(python_path=[tmp_path], on_log=lambda *line: None)
        try:
            await host.call(
                Initialize(
                    entry="echo:Echo", handler="echo", handler_id="h1", job_name="e", settings={}, state_json="{}"
                )
            )
            item = StoredResult(1, big_input, big_output, json.dumps("ä" * 5000))
            update = await host.call(ProcessResults(items=(item,), more=True))
            assert json.loads(update.state_json) == {"last": [3_000_000, "üüü", 1_000_000, "ä" * 5000]}
            assert update.more_jobs == 1 and update.invalid == ()
            (job,) = update.jobs
            assert json.loads(job.input_json) == {"pad": "y" * 2_000_000, "quote": '"'}
            assert json.loads(job.extra_json) == "é" * 5000
        finally:
            await host.close()

    asyncio.run(main())


async def fake_host(script: str) -> tuple[asyncio.subprocess.Process, HostProcess]:
    """A HostProcess around ``python -c script`` instead of a handler host."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return proc, HostProcess(proc, on_log=lambda level, message: None)


def test_a_host_that_ends_in_the_middle_of_a_frame_fails_its_call() -> None:
    """A reply line that promises texts, then an exit before they all came: the call says the host exited."""
    line = '{"id": 1, "ok": {"jobs": [], "state": 0, "summary": "", "total": null, "invalid": []}, "texts": [100]}'
    script = f"import sys; sys.stdin.readline(); sys.stdout.write({line!r} + chr(10) + 'abc'); sys.stdout.flush()"

    async def main() -> None:
        _, host = await fake_host(script)
        try:
            with pytest.raises(HostDiedError, match="handler host exited with code 0"):
                await host.call(CreateMoreJobs(), timeout_seconds=30)
        finally:
            await host.close()

    asyncio.run(main())


def test_an_event_loop_that_ends_with_a_host_still_open_ends_and_takes_the_host_along() -> None:
    """A server whose loop stops before its hosts were closed (its own bug, on the way out) must still
    end: the host's reader task, cancelled with the loop's tasks, used to wait for the host to exit,
    and the host, its stdin still open, waited for a request: the loop's end hung for good."""
    pids: list[int] = []

    async def main() -> None:
        _, host = await fake_host("import sys; sys.stdin.readline()")
        pids.append(host.pid)  # never closed

    ended = threading.Event()

    def run() -> None:
        asyncio.run(main())
        ended.set()

    threading.Thread(target=run, daemon=True).start()
    try:
        assert ended.wait(30), "the event loop did not end"
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(pids[0], 0)
    finally:
        if not ended.is_set():
            os.kill(pids[0], signal.SIGKILL)


def test_a_host_that_writes_garbage_is_killed_and_its_call_says_why() -> None:
    script = "import sys; sys.stdin.readline(); print('Segmentation fault?', flush=True); sys.stdin.readline()"

    async def main() -> None:
        proc, host = await fake_host(script)
        try:
            with pytest.raises(HostDiedError) as died:
                await host.call(CreateMoreJobs(), timeout_seconds=30)
            assert "malformed line from the handler host: not JSON" in died.value.message
            assert "Segmentation fault?" in died.value.message
            assert await asyncio.wait_for(proc.wait(), 10) != 0  # killed, not left running
            with pytest.raises(HostDiedError, match="malformed line"):
                await host.call(CreateMoreJobs())
        finally:
            await host.close()

    asyncio.run(main())


def test_a_host_that_names_results_it_was_not_handed_as_invalid_is_killed() -> None:
    """Its save would mark those jobs failed, whoever's they are: the call fails instead, and no later one
    is made to it. Named among those it was handed, an invalid result is the reply it should be."""
    reply = '{"id": %d, "ok": {"jobs": [], "state": "{}", "summary": "", "total": null, "invalid": %s}}'
    lines = [reply % (1, "[7]"), reply % (2, "[7, 99]")]
    script = "import sys\n" + "".join(f"sys.stdin.readline(); print({line!r}, flush=True)\n" for line in lines)
    script += "sys.stdin.readline()\n"
    handed = ProcessResults(items=(StoredResult(7, "{}", "not json", "null"), StoredResult(8, "{}", "1", "null")))

    async def main() -> None:
        proc, host = await fake_host(script)
        try:
            assert (await host.call(handed, timeout_seconds=30)).invalid == (7,)
            with pytest.raises(HostDiedError, match=r"named results it was not handed as not JSON \(jobs \[99\]\)"):
                await host.call(handed, timeout_seconds=30)
            assert await asyncio.wait_for(proc.wait(), 10) != 0  # killed
        finally:
            await host.close()

    asyncio.run(main())


SETTINGS_HANDLER = """
import dataclasses
from netdist.handler import Handler


@dataclasses.dataclass
class Settings:
    samples: int = 10


class Sampler(Handler):
    settings_class = Settings

    def initialize(self):
        raise AssertionError("a settings check must not initialize")

    def create_more_jobs(self):
        self.helper()

    def helper(self):
        raise ValueError("no more samples")
"""


def test_a_settings_check_runs_the_settings_class_only_and_errors_show_the_handlers_frames(tmp_path: Path) -> None:
    (tmp_path / "sampler.py").write_text(SETTINGS_HANDLER)

    async def main() -> None:
        host = await HostProcess.start(python_path=[tmp_path], on_log=lambda *line: None)
        try:
            ok = await host.call(CheckSettings(entry="sampler:Sampler", settings={"samples": 3}))
            assert (ok.jobs, ok.state_json) == ((), "{}")  # no instance: initialize would have raised
            with pytest.raises(HandlerCodeError) as bad:
                await host.call(CheckSettings(entry="sampler:Sampler", settings={"samples": "lots"}))
            assert bad.value.type == "SettingsError"
            # Raised in netdist's parse_settings: none of its frames, only the one line.
            assert (
                bad.value.traceback
                == "netdist.handler.SettingsError: setting 'samples': expected int, got str 'lots'\n"
            )
            with pytest.raises(HandlerCodeError) as raised:  # its frame is the handler's, the host's are gone
                await host.call(
                    Initialize(
                        entry="sampler:Sampler", handler="s", handler_id="h", job_name="j", settings={}, state_json="{}"
                    )
                )
            assert "sampler.py" in raised.value.traceback and "in initialize" in raised.value.traceback
            assert "host_child" not in raised.value.traceback and "netdist" not in raised.value.traceback
        finally:
            await host.close()

    asyncio.run(main())


TIMED_HANDLER = """
import time

from netdist.handler import Handler


class Slow(Handler):
    def process_result(self, job_input, output, extra):
        time.sleep(0.02)

    def process_failure(self, job_input, failure, extra):
        time.sleep(0.02)

    def create_more_jobs(self):
        time.sleep(1.0)
"""


def test_a_batchs_reply_says_how_long_the_handlers_code_took_over_it(tmp_path: Path) -> None:
    """The runtime sizes the next batch by ``seconds`` (runtime.next_batch): the handler's own time over
    the items, not the call's way to and from the host, nor the create_more_jobs that rides along."""
    (tmp_path / "slow.py").write_text(TIMED_HANDLER)

    async def main() -> None:
        host = await HostProcess.start(python_path=[tmp_path], on_log=lambda *line: None)
        try:
            init = await host.call(
                Initialize(
                    entry="slow:Slow", handler="slow", handler_id="h1", job_name="s", settings={}, state_json="{}"
                )
            )
            assert init.seconds is None  # not a batch
            items = tuple(StoredResult(n, "1", "2", "null") for n in range(3))
            results = await host.call(ProcessResults(items=items, more=True))
            assert results.seconds is not None and 0.06 <= results.seconds < 1.0
            failures = await host.call(ProcessFailures(items=(StoredFailure(7, "{}", "E", "m", "tb", "null", 1),)))
            assert failures.seconds is not None and 0.02 <= failures.seconds < 1.0
        finally:
            await host.close()

    asyncio.run(main())
