"""What a start answers: ``handlers start`` (and ``jobs add`` with ``auto-start``) answer once the handler's
host came up, so a handler whose ``initialize`` or ``on_start`` raises is reported failed with its error,
not running; a slow ``initialize`` is answered within the caller's timeout."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

from netdist.testing import wait_until, write_wheel
from tests.e2e.conftest import OUTPUTS, admin, ok
from tests.integration.conftest import Cluster

HANDLER = '''
import os
import time
from pathlib import Path

from netdist.handler import Handler, SettingsError


class Fussy(Handler):
    """Needs ``limit`` of at least 3 (checked in initialize); ``fail_in`` makes on_start raise; with ``gate``,
    initialize says so in GATE.waiting and returns once GATE exists."""

    def initialize(self):
        if self.settings.get("gate"):
            gate = self.settings["gate"]
            Path(gate + ".waiting").touch()
            deadline = time.monotonic() + 60
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.02)
        if self.settings["limit"] < 3:
            raise SettingsError(f"setting 'limit': must be at least 3, got {self.settings['limit']}\\x1b[2J")
        self.state.setdefault("made", 0)

    def on_start(self):
        if self.settings.get("fail_in") == "on_start":
            raise RuntimeError("on_start refused")
        self.state["started"] = True

    def create_more_jobs(self):
        if self.state["made"] < self.settings["limit"]:
            self.enqueue({"i": self.state["made"]})
            self.state["made"] += 1

    def process_result(self, job_input, output, extra):
        pass

    def summary(self):
        return "started" if self.state.get("started") else ""
'''

BAD_LIMIT = r"SettingsError: setting 'limit': must be at least 3, got 1\x1b[2J"
"""The handler's error as the terminal shows it: its escape sequence as visible text."""


def _script(path: Path, *, job: str, settings: str = "", **custom: object) -> Path:
    lines = [f"# {line}" for line in settings.splitlines()]
    lines += [f"# {key} = {json.dumps(value)}" for key, value in custom.items()]
    body = "\n".join(lines)
    path.write_text(
        f"""# /// script
# [tool.netdist]
# package = "fussy"
# handler = "Fussy"
# job = "{job}"
{body}
# ///
def process(job_input, ctx):
    return job_input
"""
    )
    return path


def _custom(**values: object) -> str:
    return "[tool.netdist.settings]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())


def _fussy_wheel(out: Path, version: str, handler: str = HANDLER) -> Path:
    return write_wheel(
        out / version,
        name="fussy",
        version=version,
        files={"fussy/__init__.py": "", "fussy/handler.py": handler},
        entry_points={"netdist.handlers": {"Fussy": "fussy.handler:Fussy"}},
    )


def _upload(cluster: Cluster, tmp_path: Path) -> str:
    assert cluster.server is not None
    ok(cluster.server.address, "upload-package", str(_fussy_wheel(tmp_path, "1.0")))
    return cluster.server.address


def _shown(addr: str, ref: str) -> dict[str, object]:
    shown: dict[str, object] = json.loads(ok(addr, "handlers", "show", ref, "--json"))
    return shown


def test_start_of_a_handler_whose_initialize_or_on_start_raises_says_failed_with_the_error_and_exits_1(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    ok(addr, "jobs", "add", str(_script(tmp_path / "bad.py", job="bad", settings=_custom(limit=1))))
    hid = _shown(addr, "bad")["id"]

    failed = admin(addr, "handlers", "start", "bad")
    assert failed.returncode == 1 and failed.stdout == "", failed
    assert failed.stderr.strip().splitlines() == [
        f"HandlerFailedError: handler {hid} ('bad') failed as it started, state failed: {BAD_LIMIT}"
    ]
    shown = _shown(addr, "bad")
    assert (shown["state"], shown["message"]) == (
        "failed",
        "SettingsError: setting 'limit': must be at least 3, got 1\x1b[2J",
    )

    # Any exception, in on_start as well.
    ok(
        addr,
        "jobs",
        "add",
        str(_script(tmp_path / "late.py", job="late", settings=_custom(limit=5, fail_in="on_start"))),
    )
    late = admin(addr, "handlers", "start", "late")
    assert late.returncode == 1 and late.stdout == "", late
    assert late.stderr.rstrip().endswith("failed as it started, state failed: RuntimeError: on_start refused"), late

    # A healthy handler is still answered running.
    ok(addr, "jobs", "add", str(_script(tmp_path / "good.py", job="good", settings=_custom(limit=5))))
    started = admin(addr, "handlers", "start", "good")
    assert started.returncode == 0 and started.stderr == "", started
    assert started.stdout.rstrip().endswith("('good'), state running"), started


def test_jobs_add_shows_the_failed_state_and_the_error_when_auto_start_or_the_new_script_fails(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    wide = {"COLUMNS": "250"}  # one line, as a wide terminal shows it

    # The script is stored (exit 0), and the reply says its auto-start failed, and why.
    auto = _script(tmp_path / "auto.py", job="auto", settings="auto-start = true\n" + _custom(limit=1))
    added = admin(addr, "jobs", "add", str(auto), env=wide)
    assert added.returncode == 0 and added.stderr == "", added
    hid = _shown(addr, "auto")["id"]
    assert added.stdout.strip() == f"created: handler {hid} ('auto': fussy/Fussy), state failed: {BAD_LIMIT}"

    # A running handler moved to a new script whose settings its initialize refuses.
    ok(addr, "jobs", "add", str(_script(tmp_path / "move.py", job="move", settings=_custom(limit=5))))
    assert "state running" in ok(addr, "handlers", "start", "move")
    replaced = admin(
        addr, "jobs", "add", str(_script(tmp_path / "move.py", job="move", settings=_custom(limit=1))), env=wide
    )
    assert replaced.returncode == 0, replaced
    assert replaced.stdout.startswith("replaced: ") and replaced.stdout.rstrip().endswith(f"state failed: {BAD_LIMIT}")


def test_start_answers_once_initialize_returned_and_a_slow_one_within_the_callers_timeout(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    gate = tmp_path / "gate"
    ok(addr, "jobs", "add", str(_script(tmp_path / "slow.py", job="slow", settings=_custom(limit=3, gate=str(gate)))))

    start = subprocess.Popen(
        [sys.executable, "-m", "netdist.adminctl", "--server", addr, "--timeout", "10", "handlers", "start", "slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(Path(f"{gate}.waiting").exists, 30, what="initialize to run")
        assert start.stdout is not None
        assert select.select([start.stdout], [], [], 0)[0] == [], "answered before initialize returned"
        gate.touch()
        stdout, stderr = start.communicate(timeout=30)
    finally:
        if start.poll() is None:
            start.kill()
            start.communicate()
    OUTPUTS.extend((stdout, stderr))
    assert start.returncode == 0 and stderr == "", (stdout, stderr)
    assert stdout.rstrip().endswith("('slow'), state running"), stdout
    assert _shown(addr, "slow")["result_summary"] == "started"  # on_start ran before the answer

    # An initialize slower than the caller waits: answered running in time, not a timeout.
    later = tmp_path / "later"
    ok(addr, "jobs", "add", str(_script(tmp_path / "lazy.py", job="lazy", settings=_custom(limit=3, gate=str(later)))))
    lazy = admin(addr, "handlers", "start", "lazy", timeout="3")  # its initialize waits for `later`
    assert lazy.returncode == 0 and lazy.stdout.rstrip().endswith("('lazy'), state running"), lazy
    later.touch()
    wait_until(lambda: _shown(addr, "lazy")["result_summary"] == "started", 30, what="lazy to come up")


def test_an_upload_that_moves_a_running_handler_shows_it_failed_when_its_new_host_does(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The upload moved the handler to the new version and said only 'restarted handlers'; the handler
    failed on it a moment later, seen only in handlers list."""
    addr = _upload(cluster, tmp_path)
    ok(addr, "jobs", "add", str(_script(tmp_path / "run.py", job="run", settings=_custom(limit=1000))))
    assert "state running" in ok(addr, "handlers", "start", "run")  # no worker: it stays running
    hid = _shown(addr, "run")["id"]
    broken = HANDLER.replace(
        "    def initialize(self):\n",
        "    def initialize(self):\n        raise RuntimeError('2.0 cannot start\\x1b[2J')\n",
    )
    assert broken != HANDLER
    uploaded = admin(addr, "upload-package", str(_fussy_wheel(tmp_path, "2.0", broken)))
    assert uploaded.returncode == 0, uploaded  # the package is stored: that is what the upload does
    lines = uploaded.stdout.splitlines()
    assert f"  restarted handlers: {hid}" in lines, lines
    assert f"  handler {hid} ('run') failed on it, state failed: RuntimeError: 2.0 cannot start\\x1b[2J" in lines, lines
    assert _shown(addr, "run")["state"] == "failed"
