"""Nothing a network peer sends reaches an operator's terminal raw: a real server, netdist-admin as a
subprocess, and hostile text both sent by a worker and written straight into the store (as an older
server, or one before the field limits, would have kept it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import sqlalchemy

from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.server.store.schema import handler_log, handlers, jobs, workers
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

# Clear the screen, set the title, ring, forge a row, flip the text; CSI as one C1 character, DEL.
HOSTILE = "calm\x1b[2J\x1b]0;pwned\x07\r\nFORGED │ row │\u202eevil\u2066x\u2069\x9b31m\x7f [bold]b[/bold]"
RAW = ["\x1b", "\x07", "\r", "\x9b", "\x7f", "\u202e", "\u2066", "\u2069"]


def admin(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """netdist-admin on a terminal wide enough that no cell folds (a fold could start a line anywhere)."""
    return subprocess.run(
        [sys.executable, "-m", "netdist.adminctl", "--server", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "2000"},
    )


def ok(address: str, *args: str) -> str:
    done = admin(address, *args)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def strings(value: object) -> set[str]:
    """Every string in a JSON value, keys too."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set(value) | {s for v in value.values() for s in strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in strings(v)}
    return set()


def assert_safe(out: str) -> None:
    assert not [c for c in RAW if c in out], out
    for line in out.splitlines():
        assert not line.lstrip("│┃ ").startswith("FORGED"), line  # no line, no row, of its own


def test_a_worker_naming_itself_with_escapes_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    # The real worker says so at once, before it connects ...
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "netdist.worker",
            "connect",
            addr,
            "--name",
            "w\x1b[2J",
            "--label",
            "site=l\nab",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "the name holds a control character (U+001B" in done.stderr
    assert "\x1b" not in done.stderr
    # ... and the server refuses such a Hello from anyone else.
    stub = jobs_pb2_grpc.JobServiceStub(cluster.api.channel)
    for hello, field in [
        (jobs_pb2.Hello(worker_id="e1", name="w\x1b]0;t\x07", slots=1), "Hello.name"),
        (jobs_pb2.Hello(worker_id="e1", name="w", slots=1, labels={"site": "l\u202eab"}), "Hello.labels['site']"),
        (jobs_pb2.Hello(worker_id="e1", name="w", slots=1, hostname="h" * 3_000_000), "Hello.hostname"),
        (
            jobs_pb2.Hello(worker_id="e1", name="w", slots=1, labels={f"k{i}": "v" for i in range(100_000)}),
            "Hello.labels",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Connect(iter([jobs_pb2.WorkerMessage(hello=hello)]), timeout=60))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    assert json.loads(ok(addr, "workers", "list", "--json")) == []  # nothing stored


def test_listings_show_hostile_stored_text_as_visible_escapes(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "job.py", job="calm")))
    (h,) = json.loads(ok(addr, "handlers", "list", "--json"))
    hid = h["id"]
    engine = sqlalchemy.create_engine(cluster.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.update(handlers)
                .where(handlers.c.id == hid)
                .values(job_name=HOSTILE, message=HOSTILE, summary=HOSTILE)
            )
            conn.execute(
                sqlalchemy.insert(workers).values(
                    id="old-worker-1",
                    name=HOSTILE,
                    hostname=HOSTILE,
                    version=HOSTILE,
                    slots=1,
                    labels_json=json.dumps({HOSTILE: HOSTILE}, ensure_ascii=False),
                )
            )
            conn.execute(
                sqlalchemy.insert(jobs).values(
                    handler_id=hid,
                    status="failed",
                    input=json.dumps({"x": HOSTILE}, ensure_ascii=False),
                    error_json=HOSTILE,
                    attempts=1,
                )
            )
            conn.execute(
                sqlalchemy.insert(handler_log).values(
                    handler_id=hid,
                    at=1.0,
                    level="ERROR",
                    source="job",
                    message=f"Traceback (most recent call last):\n  {HOSTILE}\nValueError: boom",
                )
            )
    finally:
        engine.dispose()
    commands = [
        ("handlers", "list"),
        ("handlers", "show", hid),
        ("workers", "list"),
        ("jobs", "list", "--status", "failed"),
    ]
    for command in commands:
        out = ok(addr, *command)
        assert_safe(out)
        assert "\\x1b[2J" in out, (command, out)  # visible, not hidden
    assert "[bold]b[/bold]" in ok(addr, "workers", "list")  # data, never markup
    log = ok(addr, "handlers", "log", hid)
    assert not [c for c in RAW if c in log], log
    assert "Traceback (most recent call last):\n      calm\\x1b[2J" in log  # a traceback keeps its lines
    for line in log.splitlines():  # each further line indented: no forged entry
        assert line.startswith((f"{time.localtime().tm_year}-", "1970-", "    ")), line
    for command in commands:
        out = ok(addr, *command, "--json")
        assert all(c == "\n" or " " <= c <= "~" for c in out), command
        assert HOSTILE in strings(json.loads(out)), command  # the data itself, faithfully
    # A reference with escapes in an error message comes back printable too.
    done = admin(addr, "handlers", "show", "no\x1b[2Jsuch")
    assert done.returncode == 1 and "\\x1b[2J" in done.stderr and "\x1b" not in done.stderr


def test_the_server_log_shows_a_jobs_hostile_error_as_visible_escapes(cluster: Cluster, tmp_path: Path) -> None:
    """A job's error message is a worker's text: the handler logs it (``process_failure``) and the
    server's log quotes it, escapes shown, line breaks as continuation lines that start no record."""
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    script = tmp_path / "hostile.py"
    script.write_text(
        '# /// script\n# [tool.netdist]\n# package = "counter"\n# handler = "Counter"\n# job = "hostile"\n'
        "# auto-start = true\n# max-attempts = 1\n# [tool.netdist.settings]\n# count = 1\n# ///\n"
        f"def process(job_input, ctx):\n    raise ValueError({HOSTILE!r})\n"
    )
    hid = cluster.api.add_script(script).handler.id
    cluster.api.wait_state(hid, "finished", timeout=60)
    assert cluster.server is not None
    log = cluster.server.output()
    assert "failed for good: calm\\x1b[2J\\x1b]0;pwned\\x07\n  FORGED │ row │\\u202eevil" in log, log
    assert not [c for c in RAW if c in log], log
    assert "\nFORGED" not in log, log
