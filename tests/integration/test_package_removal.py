"""Removing a package that handler instances use: refused, naming them, unless forced; one of several versions
only while a handler host runs it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2, packages_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


def remove(cluster: Cluster, version: str = "", *, force: bool = False) -> int:
    request = packages_pb2.RemovePackageRequest(name="counter", version=version, force=force)
    reply: packages_pb2.RemovePackageResponse = cluster.api.packages.Remove(request, timeout=10)
    return reply.removed


def versions(cluster: Cluster) -> list[str]:
    reply = cluster.api.packages.List(packages_pb2.ListPackagesRequest(all_versions=True), timeout=10)
    return [p.version for p in reply.packages]


def test_a_version_a_host_runs_and_the_last_version_are_kept_unless_forced(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path, "1.0"))
    cluster.api.upload(counter_wheel(tmp_path, "2.0"))
    # No worker: the handler runs (its host on 2.0, the current version) with its jobs waiting.
    hid = cluster.api.add_script(
        counter_script(tmp_path / "c.py", job="c", settings="auto-start = true", count=100)
    ).handler.id
    wait_until(lambda: cluster.api.handler(hid).package_version == "2.0" or None, 30, what="the host on 2.0")

    with pytest.raises(grpc.RpcError) as running:
        remove(cluster, "2.0")
    assert running.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert running.value.details().startswith(f"package 'counter' version '2.0' is used by 1 handler: c ({hid}); ")
    assert remove(cluster, "1.0") == 1  # no host runs it, and 2.0 stays
    assert versions(cluster) == ["2.0"]

    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP)  # stopped, it still needs the package to start again
    with pytest.raises(grpc.RpcError) as last:
        remove(cluster)
    assert last.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "used by 1 handler: c" in last.value.details()
    assert versions(cluster) == ["2.0"]
    assert remove(cluster, force=True) == 1
    assert versions(cluster) == []
