"""The server's event loop: uvloop's once gRPC's fork handlers are off, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from netdist.server import event_loop, grpc_fork


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_server_runs_on_uvloop_once_the_fork_handlers_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")  # not on Windows
    monkeypatch.setattr(grpc_fork._Handlers, "off", True)
    assert event_loop.run(loop_module()).startswith("uvloop")


def test_the_server_runs_on_asyncios_loop_while_the_fork_handlers_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_fork._Handlers, "off", False)
    assert event_loop.run(loop_module()).startswith("asyncio")


PROBE = "import os; from netdist.server.grpc_fork import handlers_off; print(os.environ.get({0!r}), handlers_off())"


@pytest.mark.parametrize(
    ("first", "expected"),
    [("import netdist.server", "0 True"), ("import grpc; import netdist.server", "1 False")],
    ids=["before-grpc", "after-grpc"],
)
def test_importing_the_server_turns_the_fork_handlers_off_only_before_grpc(first: str, expected: str) -> None:
    """An operator's GRPC_ENABLE_FORK_SUPPORT=1 is overridden; once grpc is imported it is too late to."""
    code = f"{first}; {PROBE.format(grpc_fork.SETTING)}"
    env = {**os.environ, grpc_fork.SETTING: "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == expected
