"""Retention as an operator sets it: processed rows go, the counts shown stay right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from netdist.testing import wait_until
from tests.e2e.conftest import ok
from tests.integration.conftest import Cluster
from tests.integration.test_watch import Recorder
from tests.support import counter_script, counter_wheel


def test_keep_processed_bounds_the_store_and_the_counts_stay_right(cluster: Cluster, tmp_path: Path) -> None:
    server = cluster.start_server(
        extra_args=("--keep-processed", "0", "--keep-outputs", "1s", "--retention-interval", "0.2")
    )
    addr = server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    script = counter_script(tmp_path / "count.py", job="pruned", settings="max-attempts = 1", count=20, fail_every=5)
    ok(addr, "jobs", "add", str(script))
    ok(addr, "handlers", "start", "pruned")
    cluster.add_worker("w1")
    cluster.api.wait_state("pruned", "finished", timeout=60)

    def pruned() -> bool:
        left = json.loads(ok(addr, "jobs", "list", "--status", "processed", "--json", "--limit", "0"))
        left += json.loads(ok(addr, "jobs", "list", "--status", "failed", "--json", "--limit", "0"))
        return not left  # every one, the newest too: job ids come from a counter, never reused

    wait_until(pruned, 30, what="retention to delete the processed jobs")
    shown = json.loads(ok(addr, "handlers", "show", "pruned", "--json"))
    assert (shown["jobs_processed"], shown["jobs_failed"], shown["jobs_total"]) == (16, 4, 20)
    status = json.loads(ok(addr, "status", "--json"))
    assert (status["jobs_processed"], status["jobs_failed"]) == (16, 4)


def test_a_handler_started_again_after_retention_shows_every_job_in_its_counts_and_its_events(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A running handler's counts come from the lease table, which counts the rows left when it
    started; the jobs retention deleted before that are added back, in ``handlers show`` and in
    the watch stream's count events alike: the numbers shown never drop."""
    server = cluster.start_server(extra_args=("--keep-processed", "0", "--retention-interval", "0.2"))
    addr = server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    settings = "max-attempts = 1"
    ok(
        addr,
        "jobs",
        "add",
        str(counter_script(tmp_path / "a.py", job="again", settings=settings, count=20, fail_every=5)),
    )
    cluster.add_worker("w1")
    ok(addr, "handlers", "start", "again")
    cluster.api.wait_state("again", "finished", timeout=60)

    def pruned() -> bool:
        return not json.loads(ok(addr, "jobs", "list", "--status", "processed", "--json", "--limit", "0"))

    wait_until(pruned, 30, what="retention to delete the processed jobs")
    watch = Recorder(addr)
    try:
        ok(
            addr,
            "jobs",
            "add",
            str(counter_script(tmp_path / "a.py", job="again", settings=settings, count=30, fail_every=5)),
        )
        ok(addr, "handlers", "start", "again")
        cluster.api.wait_state("again", "finished", timeout=60)
        shown = json.loads(ok(addr, "handlers", "show", "again", "--json"))
        assert (shown["jobs_processed"], shown["jobs_failed"]) == (24, 6)
        hid = shown["id"]

        def counted() -> list[tuple[int, int]] | None:
            seen = [
                (e.job_counts.jobs_processed, e.job_counts.jobs_failed)
                for e in watch.events()
                if e.HasField("job_counts") and e.job_counts.handler_id == hid
            ]
            return seen if seen and seen[-1] == (24, 6) else None

        seen = wait_until(counted, 10, what="the final counts in the watch stream")
        assert all(p >= 16 and f >= 4 for p, f in seen), f"the counts shown dropped: {seen}"
    finally:
        watch.close()


def test_keep_outputs_drops_outputs_and_history_but_keeps_the_jobs(cluster: Cluster, tmp_path: Path) -> None:
    server = cluster.start_server(extra_args=("--keep-outputs", "1s", "--retention-interval", "0.2"))
    addr = server.address
    ok(addr, "upload-package", str(counter_wheel(tmp_path)))
    script = counter_script(tmp_path / "count.py", job="outputs", settings="max-attempts = 2", count=10, fail_every=5)
    ok(addr, "jobs", "add", str(script))
    ok(addr, "handlers", "start", "outputs")
    cluster.add_worker("w1")
    cluster.api.wait_state("outputs", "finished", timeout=60)

    def dropped() -> list[dict[str, object]] | None:
        jobs = json.loads(ok(addr, "jobs", "list", "--status", "processed", "--json", "--limit", "0"))
        return jobs if all(j["output"] is None for j in jobs) else None

    assert len(wait_until(dropped, 30, what="retention to drop the outputs")) == 8
    (failed, *_) = json.loads(ok(addr, "jobs", "list", "--status", "failed", "--json"))

    def history_gone() -> dict[str, Any] | None:
        shown = json.loads(ok(addr, "jobs", "show", str(failed["id"]), "--json"))
        return shown if len(shown["attempt_history"]) == 1 else None  # the last attempt is the job's own row

    shown = wait_until(history_gone, 30, what="retention to delete the attempt history")
    assert shown["attempt_history"][0]["error"]["type"] == "ValueError"


def test_a_retention_value_that_is_neither_a_duration_nor_a_count_is_a_usage_error(tmp_path: Path) -> None:
    for option, value in (("--keep-processed", "lots"), ("--keep-outputs", "10")):
        done = subprocess.run(
            [sys.executable, "-m", "netdist.server", "serve", "--data-dir", str(tmp_path), option, value],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert option in done.stderr and "is not a duration" in done.stderr
