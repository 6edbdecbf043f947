"""Pure parts of the worker session and CLI: prefetch, backoff, result messages, usage errors."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from netdist.worker.cli import main
from netdist.worker.executor import input_line
from netdist.worker.job import JobRef, JobResult
from netdist.worker.session import (
    BACKOFF_MAX_SECONDS,
    _result_message,
    backoff_delays,
    prefetch,
)


def test_prefetch_is_about_50ms_of_work() -> None:
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=None) == 0
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=10.0) == 0
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.01) == 20
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.00001) == 256
    assert prefetch(slots=4, max_prefetch=256, ewma_seconds=0.0) == 256
    assert prefetch(slots=4, max_prefetch=0, ewma_seconds=0.001) == 0


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
    ok = _result_message(
        JobResult(ref=ref, output_json=b'{"a":1}', duration_seconds=0.5)
    )
    assert (ok.ref.job_id, ok.ref.lease_no) == (7, 3)
    assert json.loads(ok.output) == {"a": 1}
    assert not ok.HasField("error")
    failed = _result_message(JobResult.failed(ref, "ArtifactError", "cannot fetch"))
    assert failed.HasField("error")
    assert (failed.error.type, failed.error.message) == (
        "ArtifactError",
        "cannot fetch",
    )


def test_input_lines_pass_json_text_through() -> None:
    assert input_line(b'{"a": [1, 2]}') == b'{"a": [1, 2]}'
    assert input_line(b"not json") == b"not json"  # the child reports InputNotJson
    assert input_line(b"") == b"null"
    assert input_line(b'{\n  "a": "b"\n}\n') == b'{"a": "b"}'
    with pytest.raises(ValueError):
        input_line(b'{"a":\n')


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    for args in (
        ["connect", "no-port"],
        ["connect", "host:99999"],
        ["connect", "h:1", "--label", "novalue"],
        ["connect", "h:1", "--slots", "0"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)


def test_help_shows_the_environment_variables() -> None:
    result = CliRunner().invoke(main, ["connect", "--help"])
    assert result.exit_code == 0
    assert "NETDIST_WORKER_SLOTS" in result.output
