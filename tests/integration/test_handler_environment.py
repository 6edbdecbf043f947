"""Handler code runs with a scrubbed environment: none of the server's settings, no token."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until, write_wheel
from tests.integration.conftest import Cluster

PROBE = '''
import json
import os

from netdist.handler import Handler


class Probe(Handler):
    """Creates no job; its summary is the environment its host process sees."""

    def total_job_count(self):
        return 0

    def summary(self):
        return json.dumps(dict(os.environ))
'''

SCRIPT = """# /// script
# [tool.netdist]
# package = "envprobe"
# handler = "Probe"
# job = "probe"
# auto-start = true
# ///
def process(job_input, ctx):
    return job_input
"""


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_handler_sees_neither_the_servers_settings_nor_a_token(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    admin_token, worker_token = cluster.server.admin_token, cluster.server.worker_token_file.read_text().strip()
    secret_env = {
        "NETDIST_DB": cluster.db_url,
        "NETDIST_TOKEN": admin_token,
        "NETDIST_WORKER_TOKEN": worker_token,
        "NETDIST_LOG_LEVEL": "info",
        "SOME_SERVICE_PASSWORD": "hunter2",
        "TZ": "Europe/Zurich",
    }
    cluster.start_server(env=secret_env)  # the same store, started with secrets in its environment
    hid = _run_handler(
        cluster,
        tmp_path,
        package="envprobe",
        module="probe",
        source=PROBE,
        handler="Probe",
        script=SCRIPT,
        filename="probe.py",
    )
    seen: dict[str, str] = json.loads(cluster.api.wait_state(hid, "finished", timeout=60).result_summary)

    assert not [k for k in seen if k.startswith("NETDIST")], sorted(seen)
    values = "\n".join(seen.values())
    for secret in (admin_token, worker_token, cluster.db_url, "hunter2"):
        assert secret not in values
    assert "SOME_SERVICE_PASSWORD" not in seen
    assert seen["PATH"] == os.environ["PATH"] and seen["TZ"] == "Europe/Zurich"  # what Python needs stays
    assert (tmp_path / "data" / "envs").as_posix() in seen["PYTHONPATH"]  # the package's wheels, unpacked


CWD_PROBE = '''
import importlib.util
import json
import os
import sys

from netdist.handler import Handler


def seen():
    """What this process imports from: its start directory must not be on the path."""
    return {"found": importlib.util.find_spec("shadowme") is not None, "on_path": os.getcwd() in sys.path}


class CwdProbe(Handler):
    """One job; its summary is what the host and the job each saw."""

    def initialize(self):
        self.state.setdefault("made", False)

    def total_job_count(self):
        return 1

    def create_more_jobs(self):
        if not self.state["made"]:
            self.enqueue({})
            self.state["made"] = True

    def process_result(self, job_input, output, extra):
        self.state["job"] = output

    def summary(self):
        return json.dumps({"host": seen(), "job": self.state.get("job")})
'''

CWD_SCRIPT = """# /// script
# [tool.netdist]
# package = "cwdprobe"
# handler = "CwdProbe"
# job = "cwd"
# auto-start = true
# ///
import importlib.util
import os
import sys


def process(job_input, ctx):
    return {"found": importlib.util.find_spec("shadowme") is not None, "on_path": os.getcwd() in sys.path}
"""


def test_neither_a_handler_nor_a_job_imports_from_the_directory_its_process_started_in(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Found in a walk-through: a worker started in a folder holding a copy of a dependency's source ran
    jobs against that copy, not the wheel the server sent (``python -m`` puts the start directory first
    on the path, before the wheels and the standard library)."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "shadowme.py").write_text("WHERE = 'the start directory'\n")
    cluster.start_server(cwd=here)
    hid = _run_handler(
        cluster,
        tmp_path,
        package="cwdprobe",
        module="probe",
        source=CWD_PROBE,
        handler="CwdProbe",
        script=CWD_SCRIPT,
        filename="cwd.py",
    )
    cluster.add_worker("w1", cwd=here)
    seen = json.loads(cluster.api.wait_state(hid, "finished", timeout=60).result_summary)
    assert seen == {"host": {"found": False, "on_path": False}, "job": {"found": False, "on_path": False}}


RUNS = '''
from netdist.handler import Handler


class Runs(Handler):
    """Three jobs a run; its place (``next``) kept in its state, started over when a run begins."""

    def initialize(self):
        for key in ("next", "runs", "seen"):
            self.state.setdefault(key, 0)

    def on_start(self):
        if self.new_run:
            self.state["next"] = 0
            self.state["runs"] += 1

    def total_job_count(self):
        return 3

    def create_more_jobs(self):
        if self.state["next"] < 3:
            self.enqueue({"i": self.state["next"]})
            self.state["next"] += 1

    def process_result(self, job_input, output, extra):
        self.state["seen"] += 1

    def summary(self):
        return f"runs={self.state['runs']} seen={self.state['seen']}"
'''

RUNS_SCRIPT = """# /// script
# [tool.netdist]
# package = "runs"
# handler = "Runs"
# job = "nightly"
# auto-start = true
# ///
def process(job_input, ctx):
    return job_input
"""


def test_a_start_of_a_finished_instance_begins_a_run_the_handler_can_start_over(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Found by an operator: a schedule's second start of a finished instance ran nothing (its cursor in
    self.state was at the end) and the log read like a run. Handler.new_run tells a new run from one that
    goes on."""
    hid = _run_handler(
        cluster,
        tmp_path,
        package="runs",
        module="handler",
        source=RUNS,
        handler="Runs",
        script=RUNS_SCRIPT,
        filename="nightly.py",
    )
    cluster.add_worker("w1")
    assert cluster.api.wait_state(hid, "finished", timeout=60).result_summary == "runs=1 seen=3"
    cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)  # as a schedule starts it
    wait_until(
        lambda: cluster.api.handler(hid).result_summary == "runs=2 seen=6", 30, what="the second run's three jobs"
    )
    assert cluster.api.wait_state(hid, "finished", timeout=30).jobs_processed == 6


def _run_handler(
    cluster: Cluster,
    tmp_path: Path,
    *,
    package: str,
    module: str,
    source: str,
    handler: str,
    script: str,
    filename: str,
) -> str:
    """Upload a one-handler package whose ``package/module.py`` is ``source``; add ``script``; its handler id."""
    cluster.api.upload(
        write_wheel(
            tmp_path / "wheels",
            name=package,
            version="1.0",
            files={f"{package}/__init__.py": "", f"{package}/{module}.py": source},
            entry_points={"netdist.handlers": {handler: f"{package}.{module}:{handler}"}},
        )
    )
    path = tmp_path / filename
    path.write_text(script)
    return cluster.api.add_script(path).handler.id
