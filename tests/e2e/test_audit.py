"""The audit log records every state-changing call, refusals included, and shows it through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2, packages_pb2
from netdist.testing import wait_until
from tests.e2e.conftest import admin, ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


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
    # Reads are not audited; a refused call is, whoever made it.
    cluster.api.handlers()
    viewer = subprocess.run(
        [
            sys.executable,
            "-m",
            "netdist.server",
            "tokens",
            "create",
            "--role",
            "viewer",
            "--name",
            "dash",
            "--data-dir",
            str(tmp_path / "data"),
            "--db",
            cluster.db_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    wait_until(
        lambda: admin(address, "status", env={"NETDIST_TOKEN": viewer}).returncode == 0,
        10,
        what="the server to know the new token",
    )  # it reloads its tokens every second
    denied = admin(address, "handlers", "stop", hid, env={"NETDIST_TOKEN": viewer})
    assert denied.returncode == 1 and "PermissionDeniedError" in denied.stderr

    def six() -> list[dict[str, str]] | None:
        # Leave out the status calls made while the server did not know the viewer token yet:
        # refused with UNAUTHENTICATED, and audited too.
        entries = [e for e in json.loads(ok(address, "audit", "--json")) if e["method"] != "AdminService/GetStatus"]
        return entries if len(entries) >= 6 else None

    entries = wait_until(six, 10, what="six audit entries")
    assert [(e["method"], e["outcome"]) for e in entries] == [
        ("AdminService/ControlHandler", "PERMISSION_DENIED"),
        ("PackageService/Remove", "NOT_FOUND"),
        ("AdminService/ControlHandler", "NOT_FOUND"),
        ("AdminService/ControlHandler", "ok"),
        ("AdminService/AddJobScript", "ok"),
        ("PackageService/Upload", "ok"),
    ]
    assert (entries[0]["token_name"], entries[0]["role"]) == ("dash", "viewer")
    assert all((e["token_name"], e["role"]) == ("admin", "admin") for e in entries[1:])
    entries = entries[1:]
    by_method = {e["method"]: e for e in reversed(entries)}
    assert by_method["PackageService/Upload"]["target"] == "package counter 1.0"
    assert by_method["AdminService/AddJobScript"]["target"] == f"handler {hid}"
    assert "created" in by_method["AdminService/AddJobScript"]["detail"]
    refusal = entries[1]
    assert refusal["target"] == "handler no-such-handler" and "no-such-handler" in refusal["detail"]
    assert all(e["peer"].startswith(("ipv4:127.0.0.1", "ipv6:[::1]")) for e in entries)
    assert all(float(e["at"]) >= started - 1 for e in entries)

    # --since keeps only what is newer; the table shows the same entries.
    recent = [
        e
        for e in json.loads(ok(address, "audit", "--json", "--since", "1d"))
        if e["method"] != "AdminService/GetStatus"
    ]
    assert recent[1:6] == entries[:5]
    assert json.loads(ok(address, "audit", "--json", "--since", "2999-01-01")) == []
    wide = subprocess.run(
        [sys.executable, "-m", "netdist.adminctl", "--server", address, "audit"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert "AdminService/ControlHandler" in wide.stdout and "NOT_FOUND" in wide.stdout
    # Provenance: who uploaded the package and the job script.
    packages = json.loads(ok(address, "packages", "list", "--json"))
    assert [p.get("uploaded_by") for p in packages] == ["admin"]
    assert cluster.api.handler(hid).script_uploaded_by == "admin"
    bad = admin(address, "audit", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "expected a span" in bad.stderr
