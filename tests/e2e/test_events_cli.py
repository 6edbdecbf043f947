"""``netdist-admin events`` and ``watch`` as subprocesses against a real server and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from netdist.testing import wait_until
from tests.e2e.conftest import OUTPUTS, ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


def _start(address: str, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``netdist-admin ARGS`` with its output to a file (not a terminal), as a script runs it; ``env`` adds to
    this process's environment."""
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "netdist.adminctl", "--server", address, *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _json_lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text()
    OUTPUTS.append(text)
    return [json.loads(line) for line in text.splitlines()]


def test_events_follow_json_prints_a_run_as_json_lines(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    out = tmp_path / "events.jsonl"
    follow = _start(addr, out, "events", "--follow", "--json")
    try:
        wait_until(lambda: out.read_text().startswith('{"type": "snapshot"'), 15, what="the snapshot line")
        ok(addr, "upload-package", str(counter_wheel(tmp_path)))
        # Jobs of 50 ms: the running ones are sampled every 50 ms, and a no-op run can end between two samples.
        script = counter_script(tmp_path / "job.py", job="scripted", count=20, sleep=0.05)
        ok(addr, "jobs", "add", str(script))
        ok(addr, "handlers", "start", "scripted")
        cluster.add_worker("w1")

        def finished() -> bool:
            return any(
                o["type"] == "handler" and o["handler"]["state"] == "finished"  # type: ignore[index]
                for o in _json_lines(out)
                if '"handler"' in json.dumps(o)
            )

        wait_until(finished, 60, what="the finished event")
    finally:
        code = _stop(follow, signal.SIGTERM)
    assert code == 0, out.read_text()
    objects = _json_lines(out)  # every line parses
    assert all(isinstance(o["type"], str) and isinstance(o["time"], float) for o in objects)
    types = [o["type"] for o in objects]
    assert types[0] == "snapshot" and {"handler", "job_counts", "worker", "progress"} <= set(types)
    states = [o["handler"]["state"] for o in objects if o["type"] == "handler"]  # type: ignore[index]
    assert states == ["idle", "running", "finished"]
    final = [o for o in objects if o["type"] == "job_counts"][-1]
    assert (final["jobs_processed"], final["jobs_pending"]) == (20, 0)

    # without --follow: the snapshot, then it exits
    snapshot = [json.loads(line) for line in ok(addr, "events", "--json").splitlines()]
    assert [o["type"] for o in snapshot] == ["snapshot", "handler", "worker"]
    assert snapshot[1]["change"] == "snapshot" and snapshot[1]["handler"]["jobs_processed"] == 20
    assert snapshot[2]["worker"]["name"] == "w1"
    readable = ok(addr, "events")
    assert "snapshot  1 handler(s), 1 worker(s)" in readable and "'scripted' finished" in readable


def test_watch_piped_prints_plain_frames_and_ends_cleanly_on_sigterm(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job="on screen", count=3)))
    out = tmp_path / "watch.txt"
    watch = _start(addr, out, "watch")
    try:
        wait_until(lambda: "on screen" in out.read_text(), 15, what="the first frame")
        ok(addr, "handlers", "start", "on screen")
        cluster.add_worker("w1")
        cluster.api.wait_state("on screen", "finished", timeout=60)

        def finished_drawn() -> bool:  # the last change is drawn within the interval, though none follows it
            text = out.read_text()
            return "netdist at" in text and "finished" in text[text.rindex("netdist at") :]

        wait_until(finished_drawn, 15, what="a frame with the finished handler")
    finally:
        code = _stop(watch, signal.SIGTERM)
    text = out.read_text()
    OUTPUTS.append(text)
    assert code == 0, text
    assert "\x1b" not in text, "no escape codes when the output is not a terminal"
    last = text[text.rindex("netdist at") :]  # the last frame: the state when it ended
    assert "finished" in last and "3/3" in last and "w1" in last, text
    assert "Traceback" not in text


def test_watch_ends_with_130_on_ctrl_c(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    out = tmp_path / "watch.txt"
    watch = _start(cluster.server.address, out, "watch")
    try:
        wait_until(lambda: "Handlers" in out.read_text(), 15, what="the first frame")
    finally:
        code = _stop(watch, signal.SIGINT)
    OUTPUTS.append(out.read_text())
    assert code == 130 and "Traceback" not in out.read_text()


def _ended(proc: subprocess.Popen[bytes], what: str) -> int:
    wait_until(lambda: proc.poll() is not None, 20, what=what)
    return proc.returncode


def test_events_follow_ends_with_3_when_the_server_stops(cluster: Cluster, tmp_path: Path) -> None:
    """Found by an operator: on a clean server stop it exited 0 with nothing said, as a requested end does;
    a pipeline following events stopped and looked fine."""
    assert cluster.server is not None
    out = tmp_path / "events.txt"
    proc = _start(cluster.server.address, out, "events", "--follow")
    try:
        wait_until(lambda: out.read_text().strip(), 20, what="the snapshot")
        assert cluster.server.stop() == 0
        assert _ended(proc, "events --follow to end") == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_text().splitlines()[-1] == (
        "UnavailableError: the server ended the event stream (it stopped or restarted); nothing more follows"
    )


def test_watch_with_a_token_revoked_under_it_ends_with_1(cluster: Cluster, tmp_path: Path) -> None:
    """Found by an operator: watch kept printing its stale frame, retrying every 2 s with the refused
    token (an audit entry each time); a refused token does not heal by retrying."""
    assert cluster.server is not None
    out = tmp_path / "watch.txt"
    token = cluster.make_token("viewer", "dash")
    proc = _start(cluster.server.address, out, "watch", "--interval", "0.2", env={"NETDIST_TOKEN": token})
    try:
        wait_until(lambda: "Handlers" in out.read_text(), 20, what="the first frame")
        cluster.revoke_token("dash")
        assert _ended(proc, "watch to end") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    refusals = [line for line in out.read_text().splitlines() if "UnauthenticatedError" in line]
    assert len(refusals) == 1 and refusals[0].startswith("UnauthenticatedError: "), out.read_text()[-2000:]


def test_a_followed_handler_log_ends_when_the_handler_is_removed(cluster: Cluster, tmp_path: Path) -> None:
    """Found by an operator: 'handlers log REF -f' went on polling the log of a removed handler, silent."""
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "c.py", job="c", count=1)))
    out = tmp_path / "log.txt"
    proc = _start(addr, out, "handlers", "log", "c", "--follow")
    try:
        wait_until(lambda: "created" in out.read_text(), 20, what="the log's first line")
        ok(addr, "handlers", "remove", "c")
        assert _ended(proc, "the followed log to end") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_text().splitlines()[-1].startswith("NotFoundError: handler ")
    assert out.read_text().splitlines()[-1].endswith(" was removed; its log ends here")
