"""Bad input gets the right status and a message naming what was wrong; the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from netdist.api.v1 import admin_pb2, jobs_pb2, jobs_pb2_grpc, packages_pb2
from netdist.testing import Admin, write_wheel
from tests.inprocess import InProcessServer
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.in_process]


def status_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_bad_wheels_are_refused_and_nothing_is_stored(cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "evil-1.0-py3-none-any.whl"
    bad.write_bytes(b"this is no zip")
    code, details = status_of(lambda: cluster.api.upload(bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid zip archive" in details
    dep_only = counter_wheel(tmp_path)  # a fine wheel, but sent after one without handlers
    plain = write_wheel(tmp_path / "plain", name="plain", version="1", files={"plain/__init__.py": ""})
    code, details = status_of(lambda: cluster.api.upload(plain, dep_only))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "declares no handlers" in details
    listed = cluster.api.packages.List(packages_pb2.ListPackagesRequest(all_versions=True))
    assert list(listed.packages) == []
    assert cluster.api.upload(dep_only).created  # still serving


def test_bad_job_scripts_name_the_problem(cluster: Cluster, tmp_path: Path) -> None:
    script = counter_script(tmp_path / "s.py")
    code, details = status_of(lambda: cluster.api.add_script(script))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'package': no package named 'counter' is uploaded" in details
    cluster.api.upload(counter_wheel(tmp_path))
    text = script.read_text()
    for broken, message in [
        (
            text.replace('handler = "Counter"', 'handler = "Nope"'),
            "'handler': package 'counter' has no handler 'Nope'; it has: Counter",
        ),
        (
            text.replace("# [tool.netdist.settings]", '# max-attempts = "many"\n# [tool.netdist.settings]'),
            "'max-attempts': expected a whole number, got 'many'",
        ),
        (text.replace("# ///\n", "", 1), "no metadata block"),
    ]:
        code, details = status_of(lambda b=broken: cluster.api.add_script(tmp_path / "b.py", b))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details
    assert cluster.api.handlers() == []
    request = admin_pb2.AddJobScriptRequest(filename="x.py", content=b"\xff\xfe not text")
    code, details = status_of(lambda: cluster.api.admin.AddJobScript(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "x.py: a job script must be UTF-8 text" in details
    assert cluster.api.add_script(script).outcome == "created"  # still serving


def test_unknown_references_are_not_found(cluster: Cluster) -> None:
    code, details = status_of(lambda: cluster.api.handler("nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "no handler matches 'nope'" in details
    code, details = status_of(lambda: cluster.api.control("nope", admin_pb2.HANDLER_ACTION_START))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = status_of(lambda: cluster.api.admin.RemoveWorker(admin_pb2.RemoveWorkerRequest(ref="ghost")))
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details
    code, details = status_of(lambda: list(cluster.api.packages.Fetch(packages_pb2.FetchRequest(sha256="0" * 64))))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = status_of(lambda: list(cluster.api.packages.Fetch(packages_pb2.FetchRequest(sha256="../etc"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a sha256" in details
    code, details = status_of(lambda: cluster.api.control("", admin_pb2.HANDLER_ACTION_START))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_worker_stream_must_start_with_a_valid_hello(app_server: InProcessServer) -> None:
    def one(message: jobs_pb2.WorkerMessage) -> Iterator[jobs_pb2.WorkerMessage]:
        yield message

    admin = Admin(app_server.address)
    try:
        stub = jobs_pb2_grpc.JobServiceStub(admin.channel)
        code, details = status_of(
            lambda: list(stub.Connect(one(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=5)))))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "must start with Hello" in details
        hello = jobs_pb2.Hello(worker_id="w", name="w", slots=0)
        code, details = status_of(lambda: list(stub.Connect(one(jobs_pb2.WorkerMessage(hello=hello)))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "Hello.slots" in details
    finally:
        admin.close()
    # Refused means unknown to the dispatcher: no link, no worker in the lease table.
    links, workers = app_server.inspect(
        lambda: (len(app_server.dispatcher.links), dict(app_server.dispatcher.table.workers))
    )
    assert (links, workers) == (0, {})


def test_health_and_reflection_are_served(cluster: Cluster) -> None:
    health = health_pb2_grpc.HealthStub(cluster.api.channel)
    for service in ("", "netdist.api.v1.JobService", "netdist.api.v1.AdminService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(cluster.api.channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"netdist.api.v1.JobService", "netdist.api.v1.PackageService", "netdist.api.v1.AdminService"} <= names
