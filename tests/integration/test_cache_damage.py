"""A worker's damaged cache is found and repaired: jobs still give the right results."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdist.testing import wait_until, write_wheel
from tests.integration.conftest import Cluster
from tests.support import HANDLER, expected_sum

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.in_process]

COUNT = 40

# The job's answer comes from the wheel's module and a stdlib module: an edited
# module, or a stray fractions.py first on sys.path, would change it.
SCRIPT = f"""# /// script
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "ops"
# auto-start = true
# [tool.netdist.settings]
# count = {COUNT}
# sleep = 0.05
# ///
import time
from fractions import Fraction

from counter.ops import double


def process(job_input, ctx):
    time.sleep(job_input["sleep"])
    return {{"double": int(Fraction(double(job_input["i"])))}}
"""


def ops_wheel(out_dir: Path) -> Path:
    return write_wheel(
        out_dir,
        name="counter",
        version="1.0",
        files={
            "counter/__init__.py": "",
            "counter/handler.py": HANDLER.format(version="1.0"),
            "counter/ops.py": "def double(i):\n    return 2 * i\n",
        },
        entry_points={"netdist.handlers": {"Counter": "counter.handler:Counter"}},
    )


def only(pattern: str, root: Path) -> Path:
    [found] = root.glob(pattern)
    return found


def test_a_damaged_worker_cache_is_repaired_and_the_results_stay_right(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(ops_wheel(tmp_path))
    worker = cluster.add_worker("w1")
    (tmp_path / "ops.py").write_text(SCRIPT)
    hid = cluster.api.add_script(tmp_path / "ops.py").handler.id
    wait_until(lambda: cluster.api.handler(hid).jobs_processed >= 10, 60, what="a first run of jobs")
    assert worker.stop() == 0
    assert cluster.api.handler(hid).jobs_processed < COUNT

    # Between the two runs, the cache is damaged in every way the worker has to notice.
    cache = tmp_path / "cache" / "w1"
    wheel = only("blobs/*", cache)
    wheel.write_bytes(wheel.read_bytes()[:100])
    env = only("envs/*", cache)
    (env / "counter" / "ops.py").write_text("def double(i):\n    return 3 * i\n")
    (env / "fractions.py").write_text("def Fraction(value):\n    return value + 1\n")
    script = only("scripts/*.py", cache)
    script.write_text(script.read_text().replace('double(job_input["i"])', 'double(job_input["i"]) + 1'))

    worker = cluster.add_worker("w1")
    info = cluster.api.wait_state(hid, "finished", timeout=90)
    assert info.result_summary == f"1.0 sum={expected_sum(COUNT)} seen={COUNT} failures=0"
    assert (env / "counter" / "ops.py").read_text() == "def double(i):\n    return 2 * i\n"
    assert not (env / "fractions.py").exists()
    log = worker.output()
    assert f"cached wheel {wheel.name[:12]} failed verification" in log
    assert f"unpacked wheel {env.name[:12]} was damaged" in log
    assert f"cached job script {script.stem[:12]} failed verification" in log
