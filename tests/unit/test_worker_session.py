"""Pure parts of the worker connection and CLI: backoff, wire messages, usage errors."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from netdist.api.v1 import jobs_pb2
from netdist.worker.channel_options import CHANNEL_OPTIONS
from netdist.worker.child_protocol import input_line
from netdist.worker.cli import main
from netdist.worker.connection import BACKOFF_MAX_SECONDS, backoff_delays
from netdist.worker.job import JobRef, JobResult
from netdist.worker.stream_messages import leases_from, result_batch


def test_backoff_doubles_to_five_seconds_with_jitter() -> None:
    async def first(n: int) -> list[float]:
        delays = backoff_delays()
        return [await anext(delays) for _ in range(n)]

    delays = asyncio.run(first(10))
    assert 0.15 <= delays[0] <= 0.25
    assert 0.3 <= delays[1] <= 0.5
    assert all(d <= BACKOFF_MAX_SECONDS * 1.25 for d in delays)
    assert delays[-1] >= BACKOFF_MAX_SECONDS * 0.75


def test_result_messages() -> None:
    ref = JobRef(job_id=7, lease_no=3)
    ok, failed = result_batch(
        [
            JobResult(ref=ref, output_json=b'{"a":1}', duration_seconds=0.5),
            JobResult.failed(ref, "ArtifactError", "cannot fetch"),
        ]
    ).items
    assert (ok.ref.job_id, ok.ref.lease_no) == (7, 3)
    assert json.loads(ok.output) == {"a": 1}
    assert ok.duration_seconds == 0.5
    assert not ok.HasField("error")
    assert failed.HasField("error")
    assert (failed.error.type, failed.error.message) == (
        "ArtifactError",
        "cannot fetch",
    )


def test_leases_become_plain_values() -> None:
    (lease,) = leases_from(
        jobs_pb2.LeaseBatch(
            items=[
                jobs_pb2.Lease(
                    ref=jobs_pb2.JobRef(job_id=7, lease_no=3),
                    handler_id="h",
                    job_name="j",
                    attempt=2,
                    script_sha256="s" * 64,
                    environment=["a" * 64, "b" * 64],
                    input=b'{"x": 1}',
                    timeout_seconds=1.5,
                )
            ]
        )
    )
    assert lease.ref == JobRef(7, 3)
    assert lease.wheel_sha256s == ("a" * 64, "b" * 64)
    assert (lease.attempt, lease.input_json, lease.timeout_seconds) == (
        2,
        b'{"x": 1}',
        1.5,
    )


def test_the_channel_notices_a_dead_peer_within_ten_seconds() -> None:
    options = dict(CHANNEL_OPTIONS)
    ping_every, answer_within = (
        options["grpc.keepalive_time_ms"],
        options["grpc.http2.ping_timeout_ms"],  # what gRPC core waits for the ack
    )
    assert ping_every + answer_within <= 10_000
    assert options["grpc.keepalive_timeout_ms"] <= answer_within
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0


def test_input_lines_pass_json_text_through() -> None:
    assert input_line(b'{"a": [1, 2]}') == b'{"a": [1, 2]}'
    assert input_line(b"not json") == b"not json"  # the child reports InputNotJson
    assert input_line(b"") == b"null"
    assert input_line(b'{\n  "a": "b"\n}\n') == b'{"a": "b"}'
    with pytest.raises(ValueError, match=r"Expecting value"):
        input_line(b'{"a":\n')


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    for args in (
        ["connect", "no-port"],
        ["connect", "host:99999"],
        ["connect", "h:1", "--label", "novalue"],
        ["connect", "h:1", "--slots", "0"],
        ["connect", "h:1", "--max-job-memory", "1"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)


def test_help_shows_the_environment_variables() -> None:
    result = CliRunner().invoke(main, ["connect", "--help"])
    assert result.exit_code == 0
    assert "NETDIST_WORKER_SLOTS" in result.output
    assert "NETDIST_WORKER_MAX_JOB_MEMORY" in result.output
