"""``netdist-admin`` as a subprocess against a real server with a real worker."""

from __future__ import annotations

import json
from pathlib import Path

from netdist.testing import wait_until
from tests.e2e.conftest import admin, ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


def test_cli_uploads_controls_and_lists(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    assert "uploaded counter 1.0" in ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    script = counter_script(tmp_path / "job.py", job="cli job", settings="max-attempts = 2", count=5)
    assert "created: handler" in ok(addr, "jobs", "add", str(script))

    (listed,) = json.loads(ok(addr, "handlers", "list", "--json"))
    assert (listed["job_name"], listed["state"], listed["settings"]["max-attempts"]) == ("cli job", "idle", 2)
    hid = listed["id"]
    assert "state running" in ok(addr, "handlers", "start", "cli job")  # by job name

    cluster.add_worker("w1", labels={"site": "lab"})
    cluster.api.wait_state(hid, "finished", timeout=30)
    shown = ok(addr, "handlers", "show", hid)
    for text in (hid, "cli job", "finished", "5 processed", "max-attempts", '"count": 5'):
        assert text in shown, text
    assert "counter 1.0 initialized at 0" in ok(addr, "handlers", "log", hid)

    def worker_done() -> dict[str, object] | None:
        (w,) = json.loads(ok(addr, "workers", "list", "--json"))
        return w if w["jobs_done"] == 5 else None  # counts reach the store about once a second

    w = wait_until(worker_done, 15, what="the worker's count")
    assert (w["name"], w["labels"], w["connected"], w["running"]) == ("w1", {"site": "lab"}, True, [])

    refused = admin(addr, "handlers", "pause", hid)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"FailedPreconditionError: handler {hid} is finished: only a running handler can be paused"
    ]
    missing = admin(addr, "handlers", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("NotFoundError: ")


def test_cli_against_an_unreachable_server_says_so_in_one_line() -> None:
    done = admin("127.0.0.1:1", "status", timeout="2")
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UnavailableError: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    usage = admin("no-port", "status")
    assert usage.returncode == 2 and "expected HOST:PORT" in usage.stderr


def test_the_server_log_counts_slots_in_the_singular_and_plural(cluster: Cluster) -> None:
    cluster.add_worker("one", slots=1)
    cluster.add_worker("two", slots=2)
    wait_until(lambda: sum(w.connected for w in cluster.api.workers()) == 2, 15, what="both workers")

    def both_logged() -> str | None:
        text = cluster.logs()
        return text if text.count(" connected from ") >= 2 else None

    logs = wait_until(both_logged, 15, what="both connections logged")
    assert "with 1 slot" in logs and "with 1 slots" not in logs and "with 2 slots" in logs, logs


def test_tables_through_a_pipe_keep_each_row_on_one_line(cluster: Cluster, tmp_path: Path) -> None:
    """Found by an operator: piped into grep or a file, tables folded to rich's default of 80 columns."""
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    name = "a job name long enough that eighty columns fold it"
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job=name, count=1)))
    listed = admin(addr, "handlers", "list", env={"COLUMNS": ""})  # not a terminal, no width given
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if name in line]
    assert "counter" in row and "idle" in row, listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) > 80
