"""What a handler ends with, as the operator reads it: settings refused at upload, the end state when jobs
failed, a failed handler's error cleared by a fixed script, its saved state, and packages still in use."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from netdist.testing import write_wheel
from tests.e2e.conftest import admin, ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


def wide(address: str, *args: str) -> str:
    """A table as a wide terminal shows it: each cell on one line."""
    done = admin(address, *args, env={"COLUMNS": "250"})
    assert done.returncode == 0, done
    return done.stdout


def _upload(cluster: Cluster, tmp_path: Path) -> str:
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    return addr


def test_a_bad_custom_setting_is_refused_at_jobs_add_and_nothing_is_stored(cluster: Cluster, tmp_path: Path) -> None:
    addr = _upload(cluster, tmp_path)
    bad = admin(addr, "jobs", "add", str(counter_script(tmp_path / "bad.py", job="sums", count="lots")))
    assert bad.returncode == 1 and bad.stdout == "", bad
    assert bad.stderr.strip().splitlines() == [
        "InvalidArgumentError: [tool.netdist.settings] setting 'count': expected int, got str 'lots'"
    ]
    assert json.loads(ok(addr, "handlers", "list", "--json")) == []

    unknown = admin(addr, "jobs", "add", str(counter_script(tmp_path / "typo.py", job="sums", cuont=3)))
    assert unknown.returncode == 1 and "unknown setting 'cuont'" in unknown.stderr, unknown
    assert len(unknown.stderr.strip().splitlines()) == 1

    assert "created: handler" in ok(addr, "jobs", "add", str(counter_script(tmp_path / "good.py", job="sums", count=3)))
    before = json.loads(ok(addr, "handlers", "list", "--json"))
    again = admin(addr, "jobs", "add", str(counter_script(tmp_path / "bad2.py", job="sums", count=3, sleep="x")))
    assert again.returncode == 1 and "setting 'sleep': expected float" in again.stderr, again
    assert json.loads(ok(addr, "handlers", "list", "--json")) == before  # the existing instance is unchanged
    assert before[0]["custom_settings"] == {"count": 3}


def test_a_handler_whose_jobs_all_failed_ends_finished_with_them_counted_in_every_view(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    script = counter_script(tmp_path / "job.py", job="doomed", settings="max-attempts = 1", count=4, fail_every=1)
    ok(addr, "jobs", "add", str(script))
    ok(addr, "handlers", "start", "doomed")
    cluster.add_worker("w1")
    (listed,) = json.loads(ok(addr, "handlers", "list", "--json"))
    cluster.api.wait_state(listed["id"], "finished", timeout=30)

    (listed,) = json.loads(ok(addr, "handlers", "list", "--json"))
    assert (listed["state"], listed["state_label"], listed["jobs_failed"], listed["jobs_processed"]) == (
        "finished",
        "finished, all 4 jobs failed",
        4,
        0,
    )
    shown = json.loads(ok(addr, "handlers", "show", "doomed", "--json"))
    assert shown["state_label"] == "finished, all 4 jobs failed"
    assert "finished, all 4 jobs failed" in wide(addr, "handlers", "list")
    assert "finished, all 4 jobs failed" in wide(addr, "handlers", "show", "doomed")
    assert json.loads(ok(addr, "status", "--json"))["handlers_finished_with_failures"] == 1
    assert "1 finished with failed jobs" in ok(addr, "status")

    # The handler's answer: its saved state (an object, not a string) and its summary.
    result = json.loads(ok(addr, "handlers", "result", "doomed", "--json"))
    assert result["handler_state"]["failures"] == 4 and result["handler_state"]["seen"] == 0
    assert result["result_summary"] == "1.0 sum=0 seen=0 failures=4"
    assert result["handler_state_shown"] is True and result["handler_state_bytes"] > 0
    assert shown["handler_state"] == result["handler_state"]
    text = ok(addr, "handlers", "result", "doomed")
    assert '"failures": 4' in text and "failures=4" in text

    # Disabled and enabled again, it is where its run got to: finished, not idle.
    ok(addr, "handlers", "disable", "doomed")
    assert "state finished, all 4 jobs failed" in ok(addr, "handlers", "enable", "doomed")


def test_a_fixed_script_clears_a_failed_handlers_error_and_its_log_shows_the_handlers_frames(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job="buggy", count=3, raise_at=1)))
    ok(addr, "handlers", "start", "buggy")
    cluster.add_worker("w1")
    (listed,) = json.loads(ok(addr, "handlers", "list", "--json"))
    cluster.api.wait_state(listed["id"], "failed", timeout=30)
    failed = json.loads(ok(addr, "handlers", "show", "buggy", "--json"))
    assert failed["message"] == "RuntimeError: handler bug at 1"
    log = ok(addr, "handlers", "log", "buggy", "-n", "0")
    assert "counter/handler.py" in log and "in process_result" in log
    assert "netdist/server" not in log and "host_child" not in log, log

    fixed = ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job="buggy", count=3)))
    assert fixed.startswith("replaced: ") and fixed.rstrip().endswith("state stopped"), fixed
    shown = json.loads(ok(addr, "handlers", "show", "buggy", "--json"))
    assert (shown["state"], shown["message"]) == ("stopped", "")
    assert "state running" in ok(addr, "handlers", "start", "buggy")
    cluster.api.wait_state(listed["id"], "finished", timeout=30)


def test_packages_remove_is_refused_while_a_handler_uses_the_package_unless_forced(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job="user of counter", count=1)))
    hid = json.loads(ok(addr, "handlers", "list", "--json"))[0]["id"]
    refused = admin(addr, "packages", "remove", "counter")
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert refused.stderr.strip().splitlines() == [
        f"FailedPreconditionError: package 'counter' is used by 1 handler: user of counter ({hid}); "
        "remove them first (netdist-admin handlers remove), or use --force"
    ]
    assert [p["name"] for p in json.loads(ok(addr, "packages", "list", "--json"))] == ["counter"]
    assert "removed 1 version of counter" in ok(addr, "packages", "remove", "counter", "--force")
    assert json.loads(ok(addr, "packages", "list", "--json")) == []
    missing = admin(addr, "packages", "remove", "counter")
    assert missing.returncode == 1 and missing.stderr.startswith("NotFoundError: "), missing


def test_a_saved_state_over_the_reply_limit_is_not_sent_and_the_result_says_so(
    cluster: Cluster, tmp_path: Path
) -> None:
    addr = _upload(cluster, tmp_path)
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job="hoarder", count=1)))
    (listed,) = json.loads(ok(addr, "handlers", "list", "--json"))
    assert "handler_state" not in listed  # a list carries no states, however small
    big = json.dumps({"samples": "x" * (300 * 1024)})
    with sqlite3.connect(tmp_path / "netdist.db") as db:  # as a handler whose state grew past the limit leaves it
        db.execute("UPDATE handlers SET handler_state_json = ? WHERE id = ?", (big, listed["id"]))
    result = json.loads(ok(addr, "handlers", "result", "hoarder", "--json"))
    assert (result["handler_state"], result["handler_state_shown"]) == (None, False)
    assert result["handler_state_bytes"] == len(big)
    assert "not shown: over the 256.0 KiB a reply carries" in wide(addr, "handlers", "result", "hoarder")


BROKEN = """
from netdist.handler import Handler

LIMIT = int("ten")  # a bug in the module: found when jobs add imports it


class Broken(Handler):
    pass
"""


def test_a_handler_that_raises_on_import_is_refused_at_jobs_add_with_its_own_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    wheel = write_wheel(
        tmp_path / "broken",
        name="broken",
        version="1.0",
        files={"broken/__init__.py": "", "broken/handler.py": BROKEN},
        entry_points={"netdist.handlers": {"Broken": "broken.handler:Broken"}},
    )
    ok(addr, "upload-package", str(wheel))
    script = tmp_path / "job.py"
    script.write_text(
        counter_script(tmp_path / "c.py", job="b")
        .read_text()
        .replace('"counter"', '"broken"')
        .replace("Counter", "Broken")
    )
    refused = admin(addr, "jobs", "add", str(script))
    assert refused.returncode == 1, refused
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("InvalidArgumentError: handler 'Broken' raised while checking its settings: ValueError: ")
    assert line.endswith("broken/handler.py:4)") and "netdist" not in line.split("(at ")[1], line
    assert json.loads(ok(addr, "handlers", "list", "--json")) == []
