"""A new package version uploaded without the dependency wheels an earlier one came with: the server carries
over a stored wheel that satisfies its Requires-Dist, or refuses the upload and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import packages_pb2
from netdist.testing import wait_until, write_wheel
from tests.integration.conftest import Cluster
from tests.support import HANDLER

pytestmark = pytest.mark.timeout(120)
ALL_VERSIONS = packages_pb2.ListPackagesRequest(all_versions=True)

SCRIPT = """# /// script
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "needs tiny-dep"
# auto-start = true
# max-attempts = 1
# [tool.netdist.settings]
# count = 6
# gate = "{gate}"
# ///
import os
import time

import tiny_dep  # the dependency wheel uploaded with counter 1.0


def process(job_input, ctx):
    if job_input["i"] == 0:
        ctx.progress(42, "waiting at the gate")
        deadline = time.monotonic() + 60
        while not os.path.exists(job_input["gate"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    return {{"double": tiny_dep.double(job_input["i"]), "pid": os.getpid()}}
"""


def counter(out: Path, version: str, *, requires: list[str]) -> Path:
    return write_wheel(
        out / version,
        name="counter",
        version=version,
        files={"counter/__init__.py": "", "counter/handler.py": HANDLER.format(version=version)},
        entry_points={"netdist.handlers": {"Counter": "counter.handler:Counter"}},
        requires=requires,
    )


def tiny_dep(out: Path) -> Path:
    return write_wheel(
        out / "dep", name="tiny-dep", version="1.0", files={"tiny_dep.py": "def double(x):\n    return 2 * x\n"}
    )


def start_held(cluster: Cluster, tmp_path: Path, gate: Path) -> str:
    """Counter 1.0 with tiny-dep 1.0 uploaded, a worker, and a running handler whose first job waits at
    ``gate``: the handler instance's id."""
    cluster.api.upload(counter(tmp_path, "1.0", requires=["tiny-dep>=1"]), tiny_dep(tmp_path))
    cluster.add_worker("w1")
    script = tmp_path / "needs-dep.py"
    script.write_text(SCRIPT.format(gate=gate))
    hid = cluster.api.add_script(script).handler.id
    wait_until(
        lambda: any(j.progress_percent == 42 for j in cluster.api.running_jobs(hid)),
        60,
        what="the first job to wait at its gate",
    )
    return hid


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_new_version_without_its_dependency_wheel_carries_the_stored_one_over(
    cluster: Cluster, tmp_path: Path, gates: Callable[[str], Path]
) -> None:
    gate = gates("first job")
    hid = start_held(cluster, tmp_path, gate)

    done = cluster.admin_cli("upload-package", str(counter(tmp_path, "2.0", requires=["tiny-dep>=1"])))

    assert done.returncode == 0, done.stderr
    gate.touch()
    finished = cluster.api.wait_state(hid, "finished")
    assert finished.result_summary == "2.0 sum=30 seen=6 failures=0", finished.result_summary  # tiny_dep imported
    assert finished.jobs_failed == 0
    assert "carried over (stored with an earlier version): tiny_dep-1.0-py3-none-any.whl" in done.stdout
    assert f"restarted handlers: {hid}" in done.stdout
    (current,) = cluster.api.packages.List(packages_pb2.ListPackagesRequest(), timeout=30).packages
    assert (current.version, [d.filename for d in current.dependencies]) == ("2.0", ["tiny_dep-1.0-py3-none-any.whl"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_new_version_whose_requirement_nothing_meets_is_refused_and_changes_nothing(
    cluster: Cluster, tmp_path: Path, gates: Callable[[str], Path]
) -> None:
    gate = gates("first job")
    hid = start_held(cluster, tmp_path, gate)

    with pytest.raises(grpc.RpcError) as refused:
        cluster.api.upload(counter(tmp_path, "2.0", requires=["tiny-dep>=2"]))

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = refused.value.details() or ""
    assert "counter 2.0 requires tiny-dep>=2" in message and "upload-package" in message, message
    assert hid in message  # the instance with no dependency lock that would have broken
    assert [(p.version, p.current) for p in cluster.api.packages.List(ALL_VERSIONS, timeout=30).packages] == [
        ("1.0", True)
    ]
    assert cluster.api.handler(hid).package_version == "1.0"
    assert not any("restarting the handler host" in line.message for line in cluster.api.log(hid))
    gate.touch()
    finished = cluster.api.wait_state(hid, "finished")
    assert finished.result_summary == "1.0 sum=30 seen=6 failures=0", finished.result_summary
