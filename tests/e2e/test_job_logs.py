"""Central job logs: what jobs log through ctx.log reaches the server and ``netdist-admin``.

A real server, real workers (and a stream driven by hand for the fencing), the CLI as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy

from netdist.api.v1 import jobs_pb2
from netdist.server.store.schema import job_log
from netdist.testing import wait_until
from netdist.wire import MAX_JOB_LOG_LINES
from tests.e2e.conftest import OUTPUTS, admin, ok
from tests.e2e.test_terminal_safety import HOSTILE, RAW
from tests.faults.hand import HandWorker
from tests.integration.conftest import Cluster
from tests.support import counter_wheel

SCRIPT = """# /// script
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "{job}"
# auto-start = true
# [tool.netdist.settings]
# count = {count}
# gate = "{gate}"
# ///
import os
import time


def process(job_input, ctx):
{body}
    return {{"double": job_input["i"] * 2}}
"""


def add(cluster: Cluster, tmp_path: Path, job: str, body: str, *, count: int = 1, gate: str = "") -> str:
    """Upload the counter package and a job script whose process runs ``body``; the handler's id."""
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    script = tmp_path / f"{job}.py"
    script.write_text(SCRIPT.format(job=job, count=count, gate=gate, body=body))
    ok(addr, "jobs", "add", str(script))
    (h,) = [h for h in json.loads(ok(addr, "handlers", "list", "--json")) if h["job_name"] == job]
    return str(h["id"])


def job_ids(addr: str, hid: str, status: str) -> list[int]:
    return [j["id"] for j in json.loads(ok(addr, "jobs", "list", "--handler", hid, "--status", status, "--json"))]


def stored(cluster: Cluster, job_id: int) -> list[tuple[str, str, int]]:
    """The job's log rows as the store holds them: (level, text, dropped)."""
    engine = sqlalchemy.create_engine(cluster.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(job_log.c.level, job_log.c.text, job_log.c.dropped)
                .where(job_log.c.job_id == job_id)
                .order_by(job_log.c.id)
            ).all()
    finally:
        engine.dispose()
    return [(r.level, r.text, r.dropped) for r in rows]


def test_three_lines_and_printed_output_show_in_jobs_log_and_interleave_in_handlers_log(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    body = """
    ctx.log.info("first line of job %d", job_input["i"])
    ctx.log.warning("second line")
    print("printed line")
    ctx.log.error("third line")
"""
    hid = add(cluster, tmp_path, "three", body)
    cluster.add_worker("w1", extra_args=("--capture-output",))
    cluster.api.wait_state(hid, "finished", timeout=60)
    (job_id,) = job_ids(addr, hid, "processed")
    lines = ok(addr, "jobs", "log", str(job_id)).splitlines()
    assert len(lines) == 4, lines
    year = f"{time.localtime().tm_year}-"
    for line, level, text in zip(
        lines,
        ["INFO", "WARNING", "STDOUT", "ERROR"],
        ["first line of job 0", "second line", "printed line", "third line"],
        strict=True,
    ):
        assert line.startswith(year) and f" {level}" in line and f"attempt 1: {text}" in line, line
    assert ok(addr, "jobs", "log", str(job_id), "-n", "1").splitlines() == lines[-1:]
    # The handler's log alone has none of them; with --jobs they come in by time.
    assert "second line" not in ok(addr, "handlers", "log", hid)
    merged = ok(addr, "handlers", "log", hid, "--jobs").splitlines()
    init = next(i for i, line in enumerate(merged) if "counter 1.0 initialized" in line)
    first = next(i for i, line in enumerate(merged) if "first line of job 0" in line)
    finished = next(i for i, line in enumerate(merged) if "failed for good" in line or "finished" in line)
    assert init < first < first + 3 < finished, merged
    assert [line.split(": ", 1)[1] for line in merged[first : first + 4]] == [
        "first line of job 0",
        "second line",
        "printed line",
        "third line",
    ]
    done = admin(addr, "jobs", "log", "999999")
    assert done.returncode == 1 and done.stderr.startswith("NotFoundError: no job 999999"), done.stderr
    # The lines go with their handler.
    ok(addr, "handlers", "remove", hid)
    assert stored(cluster, job_id) == []
    gone = admin(addr, "jobs", "log", str(job_id))
    assert gone.returncode == 1 and gone.stderr.startswith(f"NotFoundError: no job {job_id}"), gone.stderr


def test_a_job_logging_past_the_bound_is_cut_with_one_marker(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    body = """
    for n in range(5000):
        ctx.log.info("line %d", n)
"""
    hid = add(cluster, tmp_path, "flood", body)
    cluster.add_worker("w1")
    cluster.api.wait_state(hid, "finished", timeout=60)
    (job_id,) = job_ids(addr, hid, "processed")
    rows = stored(cluster, job_id)
    assert len(rows) == MAX_JOB_LOG_LINES + 1
    assert [text for _, text, _ in rows[:-1]] == [f"line {n}" for n in range(MAX_JOB_LOG_LINES)]
    level, text, dropped = rows[-1]
    assert (level, dropped) == ("WARNING", 5000 - MAX_JOB_LOG_LINES)
    assert text.startswith(f"… {5000 - MAX_JOB_LOG_LINES} lines dropped")
    shown = ok(addr, "jobs", "log", str(job_id)).splitlines()
    assert len(shown) == MAX_JOB_LOG_LINES + 1
    assert f"… {5000 - MAX_JOB_LOG_LINES} lines dropped" in shown[-1]


def following(addr: str, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``netdist-admin ARGS`` running on, and the lines it printed so far (a thread reads them)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "netdist.adminctl", "--server", addr, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(process.stdout or ()), daemon=True).start()
    return process, seen


def test_follow_shows_a_running_jobs_lines_and_ends_with_the_job(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    gate = tmp_path / "gate"
    body = """
    ctx.log.info("before the gate")
    deadline = time.monotonic() + 60
    while not os.path.exists(job_input["gate"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    ctx.log.info("after the gate")
"""
    hid = add(cluster, tmp_path, "follow", body, gate=str(gate))
    cluster.add_worker("w1")
    (job_id,) = wait_until(lambda: job_ids(addr, hid, "leased") or None, 30, what="the job to run")
    follow, seen = following(addr, "jobs", "log", str(job_id), "-f")
    merged, merged_seen = following(addr, "handlers", "log", hid, "--jobs", "-f")
    try:
        wait_until(lambda: any("before the gate" in line for line in seen), 30, what="the running job's line")
        wait_until(lambda: any("before the gate" in line for line in merged_seen), 30, what="it in the handler's")
        assert follow.poll() is None  # still following: the job runs
        merged.send_signal(signal.SIGINT)  # the handler's log is followed until Ctrl-C
        assert merged.wait(30) == 130
        gate.touch()
        assert follow.wait(60) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        gate.touch()
        for process in (follow, merged):
            if process.poll() is None:
                process.kill()
                process.wait()
    wait_until(lambda: any("after the gate" in line for line in seen), 10, what="the reader")
    OUTPUTS.extend(seen + merged_seen)
    assert [line.split(": ", 1)[1].strip() for line in seen] == ["before the gate", "after the gate"]
    assert sum("before the gate" in line for line in merged_seen) == 1  # each line once, however many polls


def result(lease: jobs_pb2.Lease) -> jobs_pb2.Result:
    """The counter's right answer for ``lease``."""
    output = json.dumps({"double": 2 * json.loads(lease.input)["i"]}).encode()
    return jobs_pb2.Result(ref=lease.ref, output=output, duration_seconds=0.01)


def test_log_lines_of_a_lease_the_stream_does_not_hold_are_dropped(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    hid = add(cluster, tmp_path, "fenced", "    pass", count=2)
    hand = HandWorker(addr, "hand")
    try:
        hand.capacity(1)
        (first,) = hand.wait_leases(1)
        job, lease_no = first.ref.job_id, first.ref.lease_no

        def logs(*items: tuple[int, int, str]) -> None:
            hand.send(
                jobs_pb2.WorkerMessage(
                    logs=jobs_pb2.JobLogBatch(
                        items=[
                            jobs_pb2.JobLog(
                                ref=jobs_pb2.JobRef(job_id=j, lease_no=n),
                                lines=[jobs_pb2.JobLogLine(at=time.time(), level="info", text=text)],
                            )
                            for j, n, text in items
                        ]
                    )
                )
            )

        logs((job, lease_no, "mine"), (job, lease_no + 7, "a made-up lease"), (10**9, 1, "no such job"))
        assert [a.outcome for a in hand.results(result(first))] == [jobs_pb2.ACK_OUTCOME_ACCEPTED]
        logs((job, lease_no, "after its result"))  # the lease ended with its result
        # Its answer shows the server has read the lines before it.
        assert [a.outcome for a in hand.results(result(first))] == [jobs_pb2.ACK_OUTCOME_DUPLICATE]
        (second,) = hand.wait_leases(2)[1:]
        other = second.ref.job_id
        hand.close()  # dropped without a word: the second lease comes back
        hand = HandWorker(addr, "hand")
        hand.capacity(1)
        (third,) = hand.wait_leases(1)
        assert third.ref.job_id == other and third.ref.lease_no > second.ref.lease_no
        logs((other, second.ref.lease_no, "from the lost lease"), (other, third.ref.lease_no, "from the new lease"))
        assert [a.outcome for a in hand.results(result(third))] == [jobs_pb2.ACK_OUTCOME_ACCEPTED]
        hand.capacity(0)
    finally:
        hand.close()
    cluster.api.wait_state(hid, "finished", timeout=60)
    assert [text for _, text, _ in stored(cluster, job)] == ["mine"]
    assert [text for _, text, _ in stored(cluster, other)] == ["from the new lease"]
    shown = ok(addr, "jobs", "log", str(other))
    assert "from the new lease" in shown and "attempt 1" in shown and "lost lease" not in shown


def test_a_job_logging_escapes_reaches_no_terminal_raw(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    body = f"""
    ctx.log.warning({HOSTILE!r})
    try:
        raise ValueError({HOSTILE!r})
    except ValueError:
        ctx.log.exception("caught")
"""
    hid = add(cluster, tmp_path, "hostile", body)
    cluster.add_worker("w1")
    cluster.api.wait_state(hid, "finished", timeout=60)
    (job_id,) = job_ids(addr, hid, "processed")
    year = f"{time.localtime().tm_year}-"
    for out in (ok(addr, "jobs", "log", str(job_id)), ok(addr, "handlers", "log", hid, "--jobs")):
        assert not [c for c in RAW if c in out], out
        assert "calm\\x1b[2J" in out and "[bold]b[/bold]" in out  # visible, and data, not markup
        for line in out.splitlines():  # a message's further lines are indented: no forged entry
            assert line.startswith((year, "    ")), line
    assert any(text == HOSTILE for _, text, _ in stored(cluster, job_id))  # kept faithfully
