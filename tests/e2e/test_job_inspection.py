"""``jobs show`` and ``jobs list`` as an operator runs them: every attempt, worker names, readable errors."""

from __future__ import annotations

import json
from pathlib import Path

from netdist.testing import wait_until
from tests.e2e.conftest import admin, ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

SCRIPT = """# /// script
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "monte carlo"
# max-attempts = 3
# [tool.netdist.settings]
# count = 3
# ///
def process(job_input, ctx):
    i = job_input["i"]
    if i == 0 and ctx.attempt <= 2:
        raise ValueError(f"attempt {ctx.attempt} of job 0 fails")
    if i == 1:
        raise RuntimeError("job 1 always fails")
    return {"double": i * 2}
"""


def _line_of(text: str) -> int:
    return next(n for n, line in enumerate(SCRIPT.splitlines(), 1) if text in line)


def test_jobs_show_lists_every_attempt_with_worker_names_and_the_scripts_own_file_name(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    script = tmp_path / "montecarlo.py"
    script.write_text(SCRIPT)
    ok(addr, "jobs", "add", str(script))
    ok(addr, "handlers", "start", "monte carlo")
    cluster.add_worker("lab-1")
    cluster.api.wait_state("monte carlo", "finished", timeout=60)

    processed = json.loads(ok(addr, "jobs", "list", "--status", "processed", "--json"))
    by_input = {j["input"]["i"]: j for j in processed}
    assert sorted(by_input) == [0, 2]
    first = by_input[0]
    assert (first["attempts"], first["worker_name"], first["job_name"]) == (3, "lab-1", "monte carlo")
    assert (first["output"], first["error"], first["progress_percent"]) == ({"double": 0}, None, 100)

    shown = json.loads(ok(addr, "jobs", "show", str(first["id"]), "--json"))
    assert (shown["status"], shown["attempts"], shown["script_name"]) == ("processed", 3, "montecarlo.py")
    assert (shown["input"]["i"], shown["output"], shown["extra"]) == (0, {"double": 0}, {"i": 0})
    history = shown["attempt_history"]
    assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "errored"), (2, "errored"), (3, "succeeded")]
    assert {a["worker_name"] for a in history} == {"lab-1"}
    assert all(a["started_at"] <= a["finished_at"] and a["duration_seconds"] is not None for a in history)
    assert history[0]["finished_at"] <= history[1]["started_at"]
    for n, attempt in enumerate(history[:2], 1):
        error = attempt["error"]
        assert (error["type"], error["message"]) == ("ValueError", f"attempt {n} of job 0 fails")
        frame = f'File "montecarlo.py", line {_line_of("raise ValueError")}, in process'
        assert frame in error["traceback"], error["traceback"]
        assert "raise ValueError" in error["traceback"]  # the source line, from the script as uploaded
        assert "/scripts/" not in error["traceback"] and "netdist/worker" not in error["traceback"]
    assert history[2]["error"] is None

    text = ok(addr, "jobs", "show", str(first["id"]))
    for part in ("monte carlo", "montecarlo.py", "attempt 1: errored", "attempt 3: succeeded", "lab-1"):
        assert part in text, part
    assert "ValueError: attempt 2 of job 0 fails" in text

    (failed,) = json.loads(ok(addr, "jobs", "list", "--status", "failed", "--json"))
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["message"] == "job 1 always fails"
    assert failed["worker_name"] == "lab-1" and failed["progress_percent"] is None
    wide = {"COLUMNS": "200"}
    table = admin(addr, "jobs", "list", "--status", "failed", env=wide).stdout
    (row,) = [line for line in table.splitlines() if "RuntimeError: job 1 always fails" in line]
    assert "Traceback" not in table and '"type"' not in table and "\\n" not in table  # no JSON, no escapes
    processed = admin(addr, "jobs", "list", "--status", "processed", env=wide).stdout
    assert "monte carlo" in row and "lab-1" in row and "0%" not in row and "100%" in processed
    failed_shown = json.loads(ok(addr, "jobs", "show", str(failed["id"]), "--json"))
    assert [a["outcome"] for a in failed_shown["attempt_history"]] == ["errored"] * 3, failed_shown
    assert failed_shown["output"] is None
    assert "0%" not in ok(addr, "jobs", "show", str(failed["id"]))  # as the list: no progress for a failed job

    missing = admin(addr, "jobs", "show", "999999")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "NotFoundError: no job 999999 (never created, or removed with its handler or by retention)"
    ]
    assert admin(addr, "jobs", "show", "x").returncode == 2


def test_a_lease_revoked_while_it_ran_shows_as_an_attempt_not_charged(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    gate = tmp_path / "gate"
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "gated.py", job="gated", count=1, gate=str(gate))))
    ok(addr, "handlers", "start", "gated")
    cluster.add_worker("w1")

    def waiting() -> dict[str, object] | None:
        running = json.loads(ok(addr, "jobs", "list", "--json"))
        return running[0] if running and running[0]["progress_percent"] == 42 else None

    job = wait_until(waiting, 30, what="the job to wait at its gate")
    assert (job["worker_name"], job["job_name"], job["progress_text"]) == ("w1", "gated", "waiting at the gate")
    running = json.loads(ok(addr, "jobs", "show", str(job["id"]), "--json"))
    assert [(a["outcome"], a["worker_name"]) for a in running["attempt_history"]] == [("running", "w1")]
    assert running["progress_percent"] == 42
    ok(addr, "handlers", "stop", "gated")
    stopped = json.loads(ok(addr, "jobs", "show", str(job["id"]), "--json"))
    assert (stopped["status"], stopped["attempts"]) == ("available", 0)
    (revoked,) = stopped["attempt_history"]
    assert (revoked["outcome"], revoked["charged"], revoked["worker_name"]) == ("revoked", False, "w1")

    gate.touch()
    ok(addr, "handlers", "start", "gated")
    cluster.api.wait_state("gated", "finished", timeout=60)
    done = json.loads(ok(addr, "jobs", "show", str(job["id"]), "--json"))
    assert [(a["attempt"], a["outcome"], a["charged"]) for a in done["attempt_history"]] == [
        (1, "revoked", False),
        (1, "succeeded", True),
    ]
