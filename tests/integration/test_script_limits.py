"""Adversarial job scripts: answered promptly, nothing stored, and the server keeps serving meanwhile.

The metadata block is read in linear time off the event loop and the Python
is parsed in a child process, so a megabyte of anything costs the server
neither its event loop nor its memory. Bounds here are generous (a loaded
2-core machine); the old quadratic expression took 20 s for 128 KB.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from netdist.api.v1 import admin_pb2
from netdist.errors import JobScriptError
from netdist.server import script_check
from netdist.server.script_check import ScriptChecker
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

MIB = 1024 * 1024
ANSWER_BOUND_SECONDS = 15.0
"""Each adversarial script is answered within this (about a second on an idle machine)."""
SERVED_BOUND_SECONDS = 5.0
"""Each health check and ListHandlers meanwhile is answered within this (milliseconds on an idle machine)."""


def adversarial_scripts(valid: str) -> dict[str, bytes]:
    rng = random.Random(7)
    head = valid[: valid.index("# ///\n", valid.index("[tool.netdist.settings]")) + len("# ///\n")]
    return {
        "openers": b"# /// a\n" * 130_000,  # 1 MB
        "random-bytes": rng.randbytes(MIB),
        "random-text": "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(350_000))
        .encode()[: MIB - 8]
        .decode("utf-8", "ignore")
        .encode(),
        "unclosed-block": b"# /// script\n" + b"# x = 1\n" * 120_000,
        "parse-heavy": (head + "a\n" * ((MIB - len(head)) // 2)).encode(),  # valid metadata, 500k statements
        "deep-toml": b"# /// script\n# a = " + b"[" * (MIB - 40) + b"\n# ///\n",
    }


def blob_files(cluster: Cluster) -> set[Path]:
    return {p for p in (cluster.root / "data" / "blobs").rglob("*") if p.is_file()}


@sqlite_only
def test_megabyte_scripts_are_refused_promptly_while_other_calls_are_served(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    scripts = adversarial_scripts(counter_script(tmp_path / "ok.py").read_text())
    assert all(len(s) <= MIB for s in scripts.values())
    before = blob_files(cluster)
    answers: dict[str, tuple[grpc.StatusCode, str, float]] = {}

    def send(name: str, content: bytes) -> None:
        started = time.monotonic()
        request = admin_pb2.AddJobScriptRequest(filename=f"{name}.py", content=content)
        try:
            cluster.api.admin.AddJobScript(request, timeout=ANSWER_BOUND_SECONDS * 2)
            answers[name] = (grpc.StatusCode.OK, "", time.monotonic() - started)
        except grpc.RpcError as exc:
            answers[name] = (exc.code(), exc.details(), time.monotonic() - started)

    senders = [threading.Thread(target=send, args=item) for item in scripts.items()]
    health = health_pb2_grpc.HealthStub(cluster.api.channel)
    served: list[float] = []
    for sender in senders:
        sender.start()
    while any(s.is_alive() for s in senders):
        started = time.monotonic()
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=SERVED_BOUND_SECONDS * 2).status
        listed = cluster.api.admin.ListHandlers(admin_pb2.ListHandlersRequest(), timeout=SERVED_BOUND_SECONDS * 2)
        served.append(time.monotonic() - started)
        assert status == health_pb2.HealthCheckResponse.SERVING and list(listed.handlers) == []
    for sender in senders:
        sender.join()

    assert set(answers) == set(scripts)
    for name, (code, details, seconds) in answers.items():
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
        assert seconds < ANSWER_BOUND_SECONDS, (name, seconds, details)
        assert len(details) < 1000, name  # a refusal names the problem; it does not echo the script
    assert "must be UTF-8 text" in answers["random-bytes"][1]
    assert "no metadata block" in answers["openers"][1]
    assert "not valid TOML" in answers["deep-toml"][1]
    assert (
        "too large or too complex to check as Python" in answers["parse-heavy"][1]
        or "defines no top-level function 'process" in answers["parse-heavy"][1]
    )
    assert len(served) >= 2 and max(served) < SERVED_BOUND_SECONDS, served
    assert cluster.api.handlers() == []
    assert blob_files(cluster) == before  # nothing stored for a refused script
    assert cluster.api.add_script(tmp_path / "ok.py").outcome == "created"  # and still serving


@sqlite_only
def test_a_script_name_with_a_control_character_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    text = counter_script(tmp_path / "s.py").read_text().replace('job = "count"', 'job = "count\\u001b[2J"')
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.add_script(tmp_path / "s.py", text)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "'job': holds the control character U+001B at position 5; only printable text is allowed"
    )
    request = admin_pb2.AddJobScriptRequest(filename="a\x1b]0;owned\x07.py", content=text.encode())
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.admin.AddJobScript(request, timeout=30)
    assert err.value.details() == "'filename': holds the control character U+001B at position 1"
    assert cluster.api.handlers() == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"def process(job_input, ctx):\n    return 1\n", None),
        (b"def process(:\n", "script is not valid Python: line 1"),
        (b"x = 1\n", "script defines no top-level function 'process"),
        (b"a\n" * 500_000, script_check.TOO_COSTLY),
        (b"x = " + b"(" * 100_000, "script is not valid Python"),
    ],
    ids=["valid", "syntax", "no-process", "too-costly", "nesting"],
)
def test_the_python_check_runs_in_a_bounded_child(source: bytes, message: str | None) -> None:
    async def check() -> str | None:
        try:
            await ScriptChecker().check(source)
        except JobScriptError as exc:
            return exc.message
        return None

    answer = asyncio.run(check())
    assert (answer is None) if message is None else (answer is not None and answer.startswith(message)), answer


def test_a_slow_start_of_the_checker_is_not_charged_to_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine an interpreter can take longer to start than a script gets to parse (CI
    refused an ordinary script as "too complex" that way): the script's clock starts at ``ready``."""
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(f'#!/bin/sh\nsleep {script_check.WALL_SECONDS * 2}\nexec "{sys.executable}" "$@"\n')
    slow_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(slow_python))

    async def check(source: bytes) -> str | None:
        try:
            await ScriptChecker().check(source)
        except JobScriptError as exc:
            return exc.message
        return None

    assert asyncio.run(check(b"def process(job_input, ctx):\n    return 1\n")) is None
    assert asyncio.run(check(b"a\n" * 500_000)) == script_check.TOO_COSTLY  # the bound still holds


SCRIPTS_IN_A_ROW = 20


@sqlite_only
def test_a_server_process_starts_its_script_checker_every_time(cluster: Cluster, tmp_path: Path) -> None:
    """The server process runs on uvloop, which starts children with fork: with gRPC's fork handlers on,
    the checker died of SIGSEGV before it said it was ready, in 6 servers of 16 (netdist.server.grpc_fork)."""
    cluster.api.upload(counter_wheel(tmp_path))
    outcomes = [
        cluster.api.add_script(counter_script(tmp_path / f"s{i}.py", job=f"count{i}")).outcome
        for i in range(SCRIPTS_IN_A_ROW)
    ]
    assert outcomes == ["created"] * SCRIPTS_IN_A_ROW
    assert "did not start" not in cluster.logs()
