"""Who may call what: every RPC of every service x no token, a bad one, each role, a revoked one.

The roles are written out here from the spec, not imported from the server,
so that the table in server/auth.py is checked against it. A refused call is
made with a request that would change the store if it were allowed (remove
the handler, upload a new version, take over a worker's id...), and nothing
stored may change; an allowed call is made with a harmless request, and must
get the answer that request deserves (not a refusal).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from netdist.adminctl.client import upload_requests
from netdist.api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    packages_pb2,
    packages_pb2_grpc,
)
from netdist.channel import ClientSecurity, sync_channel
from netdist.server.store.schema import handlers, jobs, packages, tokens, workers
from netdist.testing import Admin, wait_until, write_wheel
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

pytestmark = pytest.mark.in_process

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

OPEN = {"Health/Check", "Health/Watch"}
ANY_TOKEN = {"Health/List", "ServerReflection/Info"}
WORKER = {"JobService/Connect", "PackageService/Fetch"}
VIEWER = {
    "AdminService/GetStatus",
    "AdminService/ListHandlers",
    "AdminService/GetHandler",
    "AdminService/GetHandlerLog",
    "AdminService/GetJobLog",
    "AdminService/ListJobs",
    "AdminService/GetJob",
    "AdminService/ListWorkers",
    "AdminService/ListAudit",
    "PackageService/List",
}
CALLERS = ("none", "bad", "viewer", "worker", "admin", "revoked")


def expected(caller: str, method: str) -> bool:
    """May ``caller`` call ``method``? (The spec: admin everything, worker the stream and fetches, viewer reads.)"""
    if method in OPEN:
        return True
    if caller in ("none", "bad", "revoked"):
        return False
    return caller == "admin" or method in ANY_TOKEN or method in {"worker": WORKER, "viewer": VIEWER}[caller]


def code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return OK


class Calls:
    """For each method: a call that would change the store if allowed, and a harmless one with its answer."""

    def __init__(self, channel: grpc.Channel, *, hid: str, worker_id: str, wheel_sha: str, root: Path) -> None:
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.packages = packages_pb2_grpc.PackageServiceStub(channel)
        self.jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.hid, self.worker_id, self.wheel_sha, self.root = hid, worker_id, wheel_sha, root

    def connect(self, hello: jobs_pb2.Hello) -> None:
        stream = self.jobs.Connect(iter([jobs_pb2.WorkerMessage(hello=hello)]), timeout=10)
        try:
            next(stream)
        finally:
            stream.cancel()

    def watch(self) -> None:
        stream = self.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        try:
            next(stream)
        finally:
            stream.cancel()

    def table(self) -> dict[str, tuple[Callable[[], object], Callable[[], object], grpc.StatusCode]]:
        a, p, hid, wid = self.admin, self.packages, self.hid, self.worker_id
        t = 10
        self.root.mkdir(parents=True, exist_ok=True)
        intruder = counter_script(self.root / "intruder.py", job="intruder", settings="auto-start = true")
        v2 = counter_wheel(self.root / "wheels", version="2.0")
        junk = write_wheel(self.root / "junk", name="junk", version="1.0", files={"junk/__init__.py": ""})
        log = admin_pb2.GetHandlerLogRequest(ref=hid, tail=5)
        return {
            "JobService/Connect": (
                lambda: self.connect(jobs_pb2.Hello(worker_id=wid, name="taker", slots=8)),
                lambda: self.connect(jobs_pb2.Hello(worker_id="harmless", name="h", slots=0)),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "PackageService/Fetch": (
                lambda: list(p.Fetch(packages_pb2.FetchRequest(sha256=self.wheel_sha), timeout=t)),
                lambda: list(p.Fetch(packages_pb2.FetchRequest(sha256=self.wheel_sha), timeout=t)),
                OK,
            ),
            "PackageService/List": (
                lambda: p.List(packages_pb2.ListPackagesRequest(), timeout=t),
                lambda: p.List(packages_pb2.ListPackagesRequest(), timeout=t),
                OK,
            ),
            "PackageService/Upload": (
                lambda: p.Upload(upload_requests([v2]), timeout=t),
                lambda: p.Upload(upload_requests([junk]), timeout=t),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "PackageService/Remove": (
                lambda: p.Remove(packages_pb2.RemovePackageRequest(name="counter"), timeout=t),
                lambda: p.Remove(packages_pb2.RemovePackageRequest(name="nope"), timeout=t),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/GetStatus": (
                lambda: a.GetStatus(admin_pb2.GetStatusRequest(), timeout=t),
                lambda: a.GetStatus(admin_pb2.GetStatusRequest(), timeout=t),
                OK,
            ),
            "AdminService/AddJobScript": (
                lambda: a.AddJobScript(
                    admin_pb2.AddJobScriptRequest(filename="i.py", content=intruder.read_bytes()), timeout=t
                ),
                lambda: a.AddJobScript(admin_pb2.AddJobScriptRequest(filename="x.py", content=b"no block"), timeout=t),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "AdminService/ListHandlers": (
                lambda: a.ListHandlers(admin_pb2.ListHandlersRequest(), timeout=t),
                lambda: a.ListHandlers(admin_pb2.ListHandlersRequest(), timeout=t),
                OK,
            ),
            "AdminService/GetHandler": (
                lambda: a.GetHandler(admin_pb2.GetHandlerRequest(ref=hid), timeout=t),
                lambda: a.GetHandler(admin_pb2.GetHandlerRequest(ref=hid), timeout=t),
                OK,
            ),
            "AdminService/ControlHandler": (
                lambda: a.ControlHandler(
                    admin_pb2.ControlHandlerRequest(ref=hid, action=admin_pb2.HANDLER_ACTION_REMOVE), timeout=t
                ),
                lambda: a.ControlHandler(
                    admin_pb2.ControlHandlerRequest(ref="nope", action=admin_pb2.HANDLER_ACTION_START), timeout=t
                ),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/GetHandlerLog": (
                lambda: list(a.GetHandlerLog(log, timeout=t)),
                lambda: list(a.GetHandlerLog(log, timeout=t)),
                OK,
            ),
            "AdminService/GetJobLog": (
                lambda: list(a.GetJobLog(admin_pb2.GetJobLogRequest(job_id=1, tail=5), timeout=t)),
                lambda: list(a.GetJobLog(admin_pb2.GetJobLogRequest(job_id=10**9), timeout=t)),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/ListJobs": (
                lambda: a.ListJobs(admin_pb2.ListJobsRequest(), timeout=t),
                lambda: a.ListJobs(admin_pb2.ListJobsRequest(), timeout=t),
                OK,
            ),
            "AdminService/GetJob": (
                lambda: a.GetJob(admin_pb2.GetJobRequest(id=999999), timeout=t),
                lambda: a.GetJob(admin_pb2.GetJobRequest(id=999999), timeout=t),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/ListWorkers": (
                lambda: a.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=t),
                lambda: a.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=t),
                OK,
            ),
            "AdminService/RemoveWorker": (
                lambda: a.RemoveWorker(admin_pb2.RemoveWorkerRequest(ref=wid), timeout=t),
                lambda: a.RemoveWorker(admin_pb2.RemoveWorkerRequest(ref="nope"), timeout=t),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/DisableWorker": (
                lambda: a.DisableWorker(admin_pb2.DisableWorkerRequest(ref=wid), timeout=t),
                lambda: a.DisableWorker(admin_pb2.DisableWorkerRequest(ref="nope"), timeout=t),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/EnableWorker": (
                lambda: a.EnableWorker(admin_pb2.EnableWorkerRequest(ref=wid), timeout=t),
                lambda: a.EnableWorker(admin_pb2.EnableWorkerRequest(ref="nope"), timeout=t),
                grpc.StatusCode.NOT_FOUND,
            ),
            "AdminService/ListAudit": (
                lambda: a.ListAudit(admin_pb2.ListAuditRequest(), timeout=t),
                lambda: a.ListAudit(admin_pb2.ListAuditRequest(), timeout=t),
                OK,
            ),
            "Health/Check": (
                lambda: self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=t),
                lambda: self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=t),
                OK,
            ),
            "Health/Watch": (self.watch, self.watch, OK),
            "Health/List": (
                lambda: self.health.List(health_pb2.HealthListRequest(), timeout=t),
                lambda: self.health.List(health_pb2.HealthListRequest(), timeout=t),
                grpc.StatusCode.UNIMPLEMENTED,
            ),  # not in grpcio-health-checking 1.85: past the check all the same
            "ServerReflection/Info": (
                lambda: list(
                    self.reflection.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=t
                    )
                ),
                lambda: list(
                    self.reflection.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=t
                    )
                ),
                OK,
            ),
        }


def stored(cluster: Cluster) -> dict[str, Any]:
    """What a refused call must not change: the tables it could touch, and the blobs."""
    engine = create_engine(cluster.db_url, poolclass=NullPool)
    volatile = {"last_seen", "last_used_at"}
    try:
        with engine.connect() as conn:
            state: dict[str, Any] = {
                t.name: sorted(
                    tuple(row) for row in conn.execute(select(*[c for c in t.columns if c.name not in volatile]))
                )
                for t in (handlers, packages, jobs, workers, tokens)
            }
    finally:
        engine.dispose()
    state["blobs"] = sorted(p.name for p in (cluster.root / "data").rglob("*"))
    return state


@pytest.fixture
def setup(cluster: Cluster, tmp_path: Path) -> tuple[dict[str, str | None], str, str, str]:
    wheel = counter_wheel(tmp_path / "wheels")
    sha = cluster.api.upload(wheel).package.wheel.sha256
    hid = cluster.api.add_script(counter_script(tmp_path / "c.py", job="idle")).handler.id  # idle: no jobs move
    cluster.add_worker("w1")
    worker_id = wait_until(
        lambda: next((w.id for w in cluster.api.workers() if w.connected), None), 30, what="the worker to connect"
    )
    assert cluster.server is not None
    revoked = cluster.make_token("admin", "gone")
    gone = Admin(cluster.server.address, token=revoked)
    assert code(gone.workers) == OK
    cluster.revoke_token("gone")
    wait_until(lambda: code(gone.workers) == UNAUTHENTICATED, 10, what="the revoked token to be refused")
    gone.close()
    tokens_by_caller: dict[str, str | None] = {
        "none": None,
        "bad": "ndt_" + secrets.token_urlsafe(32),
        "viewer": cluster.make_token("viewer", "v"),
        "worker": cluster.server.token_file("worker").read_text().strip(),
        "admin": cluster.server.admin_token,
        "revoked": revoked,
    }
    return tokens_by_caller, hid, worker_id, sha


def test_every_method_answers_each_caller_as_its_role_says(
    cluster: Cluster, tmp_path: Path, setup: tuple[dict[str, str | None], str, str, str]
) -> None:
    tokens_by_caller, hid, worker_id, sha = setup
    assert cluster.server is not None
    channels = {c: sync_channel(cluster.server.address, ClientSecurity(token=t)) for c, t in tokens_by_caller.items()}
    calls = {
        c: Calls(ch, hid=hid, worker_id=worker_id, wheel_sha=sha, root=tmp_path / c).table()
        for c, ch in channels.items()
    }
    methods = set(calls["admin"])
    assert methods == OPEN | ANY_TOKEN | WORKER | VIEWER | {
        "PackageService/Upload",
        "PackageService/Remove",
        "AdminService/AddJobScript",
        "AdminService/ControlHandler",
        "AdminService/RemoveWorker",
        "AdminService/DisableWorker",
        "AdminService/EnableWorker",
    }

    before = stored(cluster)
    wrong = []
    for caller in CALLERS:  # first every refusal, with the calls that would change the store
        for method, (dangerous, _, _) in sorted(calls[caller].items()):
            if not expected(caller, method):
                want = UNAUTHENTICATED if caller in ("none", "bad", "revoked") else DENIED
                if (got := code(dangerous)) != want:
                    wrong.append((caller, method, got.name, want.name))
    assert not wrong, wrong
    assert stored(cluster) == before, "a refused call changed the store"

    for caller in CALLERS:  # then every allowed call, with a harmless request
        for method, (_, harmless, answer) in sorted(calls[caller].items()):
            if expected(caller, method) and (got := code(harmless)) != answer:
                wrong.append((caller, method, got.name, answer.name))
    assert not wrong, wrong
    for channel in channels.values():
        channel.close()


def test_refusals_name_what_to_do(cluster: Cluster) -> None:
    assert cluster.server is not None
    viewer = Admin(cluster.server.address, token=cluster.make_token("viewer", "looker"))
    with pytest.raises(grpc.RpcError) as denied:
        viewer.control("nope", admin_pb2.HANDLER_ACTION_REMOVE)
    assert denied.value.code() == DENIED
    assert denied.value.details() == (
        "the viewer token 'looker' may not call AdminService/ControlHandler; "
        "give the admin token: --token-file FILE or NETDIST_TOKEN"
    )
    with sync_channel(cluster.server.address, ClientSecurity()) as channel, pytest.raises(grpc.RpcError) as missing:
        admin_pb2_grpc.AdminServiceStub(channel).ListHandlers(admin_pb2.ListHandlersRequest(), timeout=10)
    assert missing.value.code() == UNAUTHENTICATED
    assert missing.value.details() == (
        "this call carried no token: AdminService/ListHandlers needs one; "
        "give a viewer or the admin token: --token-file FILE or NETDIST_TOKEN"
    )
    viewer.close()


def test_the_admin_cli_says_no_in_one_red_line_and_exits_1(cluster: Cluster) -> None:
    viewer = cluster.make_token("viewer", "reader")
    listed = cluster.admin_cli("handlers", "list", "--json", env={"NETDIST_TOKEN": viewer})
    assert listed.returncode == 0, listed.stderr
    refused = cluster.admin_cli("workers", "disable", "nope", env={"NETDIST_TOKEN": viewer})
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [
        "PermissionDeniedError: the viewer token 'reader' may not call AdminService/DisableWorker; give the admin "
        "token: --token-file FILE or NETDIST_TOKEN"
    ]
    bad = cluster.admin_cli("status", env={"NETDIST_TOKEN": "ndt_" + secrets.token_urlsafe(32)})
    assert (bad.returncode, bad.stdout) == (1, "")
    (line,) = bad.stderr.splitlines()
    assert line.startswith("UnauthenticatedError: the token given is not known to this server") and line.endswith(
        "(the token given came from NETDIST_TOKEN)"
    ), line
    nowhere = cluster.root / "no-tokens-here"
    none = cluster.admin_cli("status", env={"NETDIST_DATA_DIR": str(nowhere), "NETDIST_TOKEN": ""})
    assert (none.returncode, none.stdout) == (1, "")
    (line,) = none.stderr.splitlines()  # it said "(the token given came from no token)"
    assert line.startswith("UnauthenticatedError: this call carried no token") and line.endswith(
        f"(none found: no --token-file, NETDIST_TOKEN unset, no {nowhere / 'admin.token'})"
    ), line


def test_a_revoked_token_ends_its_open_worker_stream_and_followed_log(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    cluster.api.upload(counter_wheel(tmp_path))
    hid = cluster.api.add_script(
        counter_script(tmp_path / "c.py", job="c", settings="auto-start = true", count=4)
    ).handler.id
    token_file = tmp_path / "lab.token"
    token_file.write_text(cluster.make_token("worker", "lab") + "\n")
    worker = cluster.add_worker("lab", token_file=token_file)
    cluster.api.wait_state(hid, "finished", timeout=60)

    follower = Admin(cluster.server.address, token=cluster.make_token("viewer", "follower"))
    stream = follower.admin.GetHandlerLog(admin_pb2.GetHandlerLogRequest(ref=hid, follow=True))
    ended: list[grpc.RpcError] = []
    lines: list[admin_pb2.LogLine] = []

    def follow() -> None:
        try:
            lines.extend(stream)
        except grpc.RpcError as exc:
            ended.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_until(lambda: lines, 10, what="the followed log's first lines")
    cluster.revoke_token("lab")
    cluster.revoke_token("follower")

    wait_until(lambda: worker.popen.poll() is not None, 15, what="the worker to exit")
    assert worker.popen.returncode == 1
    refusals = [line for line in worker.output().splitlines() if "UnauthenticatedError" in line]
    assert len(refusals) == 1 and "the token 'lab' was revoked" in refusals[0], worker.output()
    reader.join(15)
    assert not reader.is_alive(), "the followed log did not end"
    assert ended and ended[0].code() == UNAUTHENTICATED and "'follower' was revoked" in ended[0].details()
    assert cluster.api.workers()[0].connected is False
    follower.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_worker_whose_token_is_refused_exits_1_with_one_line(cluster: Cluster, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("ndt_" + secrets.token_urlsafe(32) + "\n")
    worker = cluster.add_worker("refused", token_file=wrong)
    wait_until(lambda: worker.popen.poll() is not None, 30, what="the worker to give up")
    assert worker.popen.returncode == 1
    (line,) = [line for line in worker.output().splitlines() if "Error" in line]
    assert line.startswith("UnauthenticatedError: the server at ") and "not known to this server" in line, line
    assert line.endswith(f"(the token given came from --token-file {wrong})"), line
    assert "Traceback" not in worker.output()
