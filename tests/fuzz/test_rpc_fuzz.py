"""Every RPC of the server, fuzzed: random, mutated and undecodable messages, on a real server.

For each method of JobService, PackageService and AdminService (taken from
the proto descriptors, so a new RPC is fuzzed without touching this file) the
suite sends well over 1,000 messages: random ones reaching every field, valid
ones with fields mutated, and raw bytes that are not protobuf at all. Each call
must end in success or a deliberate refusal (never INTERNAL or UNKNOWN, which
would mean an unhandled error), the server must stay SERVING throughout, it
must not log a traceback per bad message, nothing it stores may change (every
call here is built to be refused or to read), and a normal run must complete
afterwards.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import hypothesis.strategies as st
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from sqlalchemy import create_engine, text

from netdist.api.v1 import admin_pb2, jobs_pb2, packages_pb2
from netdist.testing import Admin, ServerProcess, start_server, start_worker, wait_until
from tests.fuzz.messages import message, mutated, raw
from tests.support import counter_script, counter_wheel, expected_sum

SERVICES = [
    d.services_by_name[n]
    for d, n in (
        (jobs_pb2.DESCRIPTOR, "JobService"),
        (packages_pb2.DESCRIPTOR, "PackageService"),
        (admin_pb2.DESCRIPTOR, "AdminService"),
    )
]
METHODS = [m for service in SERVICES for m in service.methods]
PER_CALL = 12  # at most this many messages per example: a batch of unary calls, or one stream
MIN_PER_CALL = 6  # EXAMPLES of at least this many: over 1,000 whatever sizes Hypothesis draws
EXAMPLES = 170  # per method: over 1,000 messages each (with 4 a call at least, one run drew 990)
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a stream that waits (a followed log) until our deadline
    grpc.StatusCode.CANCELLED,  # we cancel streams we have read enough of
}
TABLES = ("packages", "handlers", "jobs")
ENDLESS = {"Watch"}
"""Server streams that go on until the client ends them: their first answer is read, then the call is
cancelled (waiting for 20 would wait for events nobody makes, the whole deadline, every call)."""


@dataclasses.dataclass
class Rig:
    server: ServerProcess
    admin: Admin
    db_url: str
    root: Path
    sent: dict[str, int] = dataclasses.field(default_factory=dict)

    def snapshot(self) -> dict[str, list[Any]]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))] for t in TABLES}
        finally:
            engine.dispose()

    def serving(self) -> bool:
        stub = health_pb2_grpc.HealthStub(self.admin.channel)
        return bool(
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("fuzz")
    db_url = f"sqlite:///{root / 'netdist.db'}"
    server = start_server(root / "data", log_dir=root / "logs", db_url=db_url, heartbeat_interval=0.3)
    admin = Admin(server.address)
    admin.upload(counter_wheel(root))  # something to fetch and to be refused to remove
    try:
        yield Rig(server=server, admin=admin, db_url=db_url, root=root)
    finally:
        admin.close()
        assert server.stop() == 0, server.output()[-4000:]


def _valid(method: MethodDescriptor) -> list[Message]:
    """Plausible requests of a method, to mutate: refs and names that exist nowhere."""
    if method.name == "Connect":
        return [
            jobs_pb2.WorkerMessage(hello=jobs_pb2.Hello(worker_id="fuzz-w", name="fuzz", slots=1)),
            jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=3)),
            jobs_pb2.WorkerMessage(
                results=jobs_pb2.ResultBatch(
                    items=[jobs_pb2.Result(ref=jobs_pb2.JobRef(job_id=1, lease_no=1), output=b"1")]
                )
            ),
        ]
    if method.name == "Upload":
        return [
            packages_pb2.UploadPackageRequest(
                header=packages_pb2.WheelHeader(filename="nopkg-1.0-py3-none-any.whl", size=30)
            ),
            packages_pb2.UploadPackageRequest(chunk=b"PK\x03\x04" + b"\x00" * 26),
        ]
    if method.name == "AddJobScript":
        script = (
            '# /// script\n# [tool.netdist]\n# package = "no-such-package"\n# handler = "H"\n'
            '# job = "fuzz"\n# ///\ndef process(i, ctx):\n    return i\n'
        )
        return [admin_pb2.AddJobScriptRequest(filename="fuzz.py", content=script.encode())]
    cls = GetMessageClass(method.input_type)
    msg = cls()
    for name in ("ref", "handler_ref", "name", "sha256"):
        if name in method.input_type.fields_by_name:
            setattr(msg, name, "zz-no-such-thing-" + name)
    return [msg]


def _requests(method: MethodDescriptor) -> st.SearchStrategy[list[Message]]:
    one = message(method.input_type) | st.sampled_from(_valid(method)).flatmap(mutated)
    if method.name == "Connect":  # mostly a stream that starts with a Hello, as a worker's does
        first = st.sampled_from(_valid(method)[:1]).flatmap(mutated) | one
        rest = st.lists(one, min_size=MIN_PER_CALL - 1, max_size=PER_CALL - 1)
        return st.tuples(first, rest).map(lambda p: [p[0], *p[1]])
    return st.lists(one, min_size=MIN_PER_CALL, max_size=PER_CALL)


def _call(channel: grpc.Channel, method: MethodDescriptor, requests: list[Any], *, encoded: bool) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    out_cls = GetMessageClass(method.output_type)
    ser = (lambda b: b) if encoded else (lambda m: m.SerializeToString())
    de = out_cls.FromString
    streaming_in, streaming_out = method.client_streaming, method.server_streaming
    try:
        if streaming_in and streaming_out:
            responses = channel.stream_stream(path, request_serializer=ser, response_deserializer=de)(
                iter(requests), timeout=2
            )
            for _ in itertools.islice(responses, 20):
                pass
            responses.cancel()
        elif streaming_in:
            channel.stream_unary(path, request_serializer=ser, response_deserializer=de)(iter(requests), timeout=5)
        elif streaming_out:
            for request in requests:
                responses = channel.unary_stream(path, request_serializer=ser, response_deserializer=de)(
                    request, timeout=2
                )
                for _ in itertools.islice(responses, 1 if method.name in ENDLESS else 20):
                    pass
                responses.cancel()
        else:  # the batch goes out at once, and every answer is checked
            unary = channel.unary_unary(path, request_serializer=ser, response_deserializer=de)
            for request, future in [(r, unary.future(r, timeout=5)) for r in requests]:
                try:
                    future.result()
                except grpc.RpcError as exc:
                    _check(exc, path, request)
    except grpc.RpcError as exc:
        _check(exc, path, requests)


def _check(exc: grpc.RpcError, path: str, request: object) -> None:
    code = exc.code()
    assert code in REFUSALS, f"{path} answered {code}: {exc.details()} for {request!r:.500}"


# Over 1,000 messages per method (EXAMPLES of up to PER_CALL calls); ListAudit answers up to
# MAX_AUDIT rows a call from an audit log this fuzz fills with its refusals: 22 s on a loaded
# 2-core machine, where the other methods take under 11 s.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_random_and_mutated_messages_are_refused_cleanly(rig: Rig, method: MethodDescriptor) -> None:
    before = rig.snapshot()
    count = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests=_requests(method))
    def fuzz(requests: list[Message]) -> None:
        nonlocal count
        count += len(requests)
        _call(rig.admin.channel, method, requests, encoded=False)

    fuzz()
    assert count >= 1000
    assert rig.serving()
    assert rig.snapshot() == before


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_bytes_that_are_not_protobuf_are_refused_cleanly(rig: Rig, method: MethodDescriptor) -> None:
    before = rig.snapshot()

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payloads=st.lists(raw(), min_size=1, max_size=PER_CALL))
    def fuzz(payloads: list[bytes]) -> None:
        _call(rig.admin.channel, method, payloads, encoded=True)

    fuzz()
    assert rig.serving()
    assert rig.snapshot() == before


def test_after_the_fuzz_a_normal_run_completes_and_the_log_holds_no_traceback_per_message(rig: Rig) -> None:
    tracebacks = rig.server.output().count("Traceback")
    assert tracebacks <= 3, rig.server.output()[-6000:]
    worker = start_worker(
        rig.server.address, name="after-fuzz", log_dir=rig.root / "logs", cache_dir=rig.root / "cache"
    )
    try:
        hid = rig.admin.add_script(
            counter_script(rig.root / "after.py", job="after", settings="auto-start = true", count=50)
        ).handler.id
        info = rig.admin.wait_state(hid, "finished", timeout=60)
        assert info.result_summary == f"1.0 sum={expected_sum(50)} seen=50 failures=0"
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    wait_until(rig.serving, 5, what="health")
