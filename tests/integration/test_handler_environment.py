"""Handler code runs with a scrubbed environment: none of the server's settings, no token."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netdist.testing import write_wheel
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
    cluster.api.upload(
        write_wheel(
            tmp_path / "wheels",
            name="envprobe",
            version="1.0",
            files={"envprobe/__init__.py": "", "envprobe/probe.py": PROBE},
            entry_points={"netdist.handlers": {"Probe": "envprobe.probe:Probe"}},
        )
    )
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    hid = cluster.api.add_script(script).handler.id
    seen: dict[str, str] = json.loads(cluster.api.wait_state(hid, "finished", timeout=60).result_summary)

    assert not [k for k in seen if k.startswith("NETDIST")], sorted(seen)
    values = "\n".join(seen.values())
    for secret in (admin_token, worker_token, cluster.db_url, "hunter2"):
        assert secret not in values
    assert "SOME_SERVICE_PASSWORD" not in seen
    assert seen["PATH"] == os.environ["PATH"] and seen["TZ"] == "Europe/Zurich"  # what Python needs stays
    assert (tmp_path / "data" / "envs").as_posix() in seen["PYTHONPATH"]  # the package's wheels, unpacked
