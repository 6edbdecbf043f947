"""Shell completion offers the names the server knows (bash protocol, as the shell calls it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netdist.testing import wait_until
from tests.e2e.conftest import ok
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel


def complete(*words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash would be offered for the last word of ``netdist-admin WORDS``."""
    line = ["netdist-admin", *words]
    done = subprocess.run(
        [sys.executable, "-m", "netdist.adminctl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            **(env or {}),
            "_NETDIST_ADMIN_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(line),
            "COMP_CWORD": str(len(line) - 1),
        },
    )
    assert done.returncode == 0 and done.stderr == "", done
    return [row.split(",", 1)[1] for row in done.stdout.splitlines() if row]  # "plain,VALUE" rows


def test_completion_offers_handler_worker_and_package_names(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    addr = cluster.server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "a.py", job="squares", count=1)))
    ok(addr, "jobs", "add", str(counter_script(tmp_path / "b.py", job="sums", count=1)))
    cluster.add_worker("lab-7")
    wait_until(lambda: any(w.connected for w in cluster.api.workers()), 15, what="the worker to connect")

    assert complete("--server", addr, "handlers", "show", "sq") == ["squares"]
    assert sorted(complete("--server", addr, "handlers", "start", "s")) == ["squares", "sums"]
    assert complete("--server", addr, "jobs", "list", "--handler", "su") == ["sums"]
    assert complete("--server", addr, "workers", "disable", "lab") == ["lab-7"]
    assert complete("--server", addr, "packages", "remove", "") == ["counter"]


def test_completion_against_no_server_offers_nothing_and_prints_nothing() -> None:
    assert complete("--server", "127.0.0.1:1", "handlers", "show", "") == []
    assert complete("handlers", "sh") == ["show"]  # the commands themselves need no server
