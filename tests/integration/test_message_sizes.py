"""Megabyte inputs and outputs on a real server and worker; an output or input past the limit fails clearly.

The server takes messages of up to 4 MiB (netdist.wire): a job's output of
up to about 4 MiB travels; a larger one fails that job with OutputTooLarge
on the worker while the stream and the other jobs go on; a handler that
enqueues a larger input fails with InputTooLarge.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import write_wheel
from netdist.wire import MAX_INPUT_BYTES, MAX_OUTPUT_BYTES
from tests.integration.conftest import Cluster

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.in_process]

MIB = 1024 * 1024

HANDLER = """
from dataclasses import dataclass
from netdist.handler import Handler


@dataclass
class Settings:
    count: int = 6
    input_bytes: int = 1048576
    output_bytes: int = 1048576
    huge_at: int = -1  # this job's output is past the limit
    huge_input: bool = False


class Sizes(Handler[Settings]):
    settings_class = Settings

    def initialize(self):
        self.state.setdefault("next", 0)
        self.state.setdefault("outputs", {})
        self.state.setdefault("failures", {})

    def create_more_jobs(self):
        if self.settings.huge_input:
            self.enqueue({"i": 0, "pad": "i" * (5 * 1048576), "size": 1})
        for i in range(self.state["next"], self.settings.count):
            size = 5 * 1048576 if i == self.settings.huge_at else self.settings.output_bytes
            self.enqueue({"i": i, "pad": "i" * self.settings.input_bytes, "size": size})
        self.state["next"] = self.settings.count

    def process_result(self, job_input, output, extra):
        assert len(job_input["pad"]) == self.settings.input_bytes
        self.state["outputs"][str(job_input["i"])] = len(output["pad"])

    def process_failure(self, job_input, failure, extra):
        self.state["failures"][str(job_input["i"])] = f"{failure.type}: {failure.message}"

    def summary(self):
        return f"outputs={len(self.state['outputs'])} failures={len(self.state['failures'])}"
"""

SCRIPT = """# /// script
# [tool.netdist]
# package = "sizes"
# handler = "Sizes"
# job = "{job}"
# max-attempts = 1
# [tool.netdist.settings]
{settings}# ///
def process(job_input, ctx):
    ctx.progress(50, "p" * 100_000)  # cut to what the server keeps, on the worker
    return {{"i": job_input["i"], "pad": "o" * job_input["size"]}}
"""


def sizes_wheel(out_dir: Path) -> Path:
    return write_wheel(
        out_dir,
        name="sizes",
        version="1.0",
        files={"sizes/__init__.py": HANDLER},
        entry_points={"netdist.handlers": {"Sizes": "sizes:Sizes"}},
    )


def add(cluster: Cluster, tmp_path: Path, job: str, **settings: object) -> str:
    lines = "".join(f"# {k} = {json.dumps(v)}\n" for k, v in settings.items())
    script = tmp_path / f"{job}.py"
    script.write_text(SCRIPT.format(job=job, settings=lines))
    info = cluster.api.add_script(script).handler
    cluster.api.control(info.id, admin_pb2.HANDLER_ACTION_START)
    return info.id


def test_megabyte_inputs_and_outputs_travel_and_an_oversized_output_fails_only_its_job(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.api.upload(sizes_wheel(tmp_path))
    worker = cluster.add_worker("w1", slots=2)
    hid = add(cluster, tmp_path, "megabytes", count=8, input_bytes=MIB, output_bytes=MAX_OUTPUT_BYTES - 64, huge_at=3)
    info = cluster.api.wait_state(hid, "finished", timeout=120)
    assert info.jobs_processed == 7 and info.jobs_failed == 1, info
    assert info.result_summary == "outputs=7 failures=1"
    failed = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status="failed", limit=10)).jobs
    assert len(failed) == 1
    error = failed[0].error_info
    assert error.type == "OutputTooLarge"
    assert error.message.startswith("the job's output is ")
    assert error.message.endswith(f" bytes of JSON, the limit is {MAX_OUTPUT_BYTES}")
    assert worker.alive()
    assert "lost connection" not in worker.output() and "RESOURCE_EXHAUSTED" not in worker.output()
    [connected] = [w for w in cluster.api.workers() if w.name == "w1"]
    assert connected.connected  # the stream never broke: one connection all along


def test_an_oversized_input_fails_the_handler_that_enqueued_it(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(sizes_wheel(tmp_path))
    hid = add(cluster, tmp_path, "huge-input", count=1, huge_input=True)
    info = cluster.api.wait_state(hid, "failed", timeout=60)
    assert "InputTooLarge: the job's input is " in info.message
    assert f"bytes of JSON, the limit is {MAX_INPUT_BYTES}" in info.message


def test_a_message_past_the_servers_receive_limit_is_refused_by_grpc(cluster: Cluster) -> None:
    """4 MiB: what the protocol needs (a 1 MiB script, 256 KiB upload chunks, ~1 MiB result batches)."""
    request = admin_pb2.AddJobScriptRequest(filename="big.py", content=b"#" * (4 * MIB + 1))
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.admin.AddJobScript(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cluster.api.handlers() == []  # still serving
