"""The audit log records every state-changing call, refusals included, and shows it through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2, packages_pb2
from netdist.testing import wait_until
from tests.e2e.test_cli import admin, ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(root=tmp_path, db_url=f"sqlite:///{tmp_path / 'netdist.db'}")
    c.start_server()
    try:
        yield c
    finally:
        codes = c.close()
        assert all(code == 0 for _, code in codes), f"{codes}\n{c.logs()}"


def test_state_changes_and_refusals_are_audited_newest_first(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    address = cluster.server.address
    started = time.time()
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(counter_script(tmp_path / "a.py", job="audited", count=3)).handler.id
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    with pytest.raises(grpc.RpcError) as refused:
        cluster.api.control("no-such-handler", admin_pb2.HANDLER_ACTION_STOP)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError):
        cluster.api.packages.Remove(packages_pb2.RemovePackageRequest(name="nothing-here"), timeout=10)
    # Reads are not audited.
    cluster.api.handlers()

    def five() -> list[dict[str, str]] | None:
        entries = json.loads(ok(address, "audit", "--json"))
        return entries if len(entries) >= 5 else None

    entries = wait_until(five, 10, what="five audit entries")
    assert [(e["method"], e["outcome"]) for e in entries] == [
        ("PackageService/Remove", "NOT_FOUND"),
        ("AdminService/ControlHandler", "NOT_FOUND"),
        ("AdminService/ControlHandler", "ok"),
        ("AdminService/AddJobScript", "ok"),
        ("PackageService/Upload", "ok"),
    ]
    by_method = {e["method"]: e for e in reversed(entries)}
    assert by_method["PackageService/Upload"]["target"] == "package counter 1.0"
    assert by_method["AdminService/AddJobScript"]["target"] == f"handler {hid}"
    assert "created" in by_method["AdminService/AddJobScript"]["detail"]
    refusal = entries[1]
    assert refusal["target"] == "handler no-such-handler" and "no-such-handler" in refusal["detail"]
    assert all(e["peer"].startswith(("ipv4:127.0.0.1", "ipv6:[::1]")) for e in entries)
    assert all(e["at"] >= started - 1 for e in entries)

    # --since keeps only what is newer; the table shows the same entries.
    assert json.loads(ok(address, "audit", "--json", "--since", "1d"))[:5] == entries[:5]
    assert json.loads(ok(address, "audit", "--json", "--since", "2999-01-01")) == []
    wide = subprocess.run([sys.executable, "-m", "netdist.adminctl", "--server", address, "audit"],
                          capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "COLUMNS": "250"})
    assert "AdminService/ControlHandler" in wide.stdout and "NOT_FOUND" in wide.stdout
    bad = admin(address, "audit", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "expected a span" in bad.stderr
