"""The worker <-> executor child channel: every message round-trips; garbage gets a clear error."""

from __future__ import annotations

import json

import pytest

from netdist.jsonline import MalformedLineError
from netdist.worker.child_protocol import (
    CancelJob,
    ChildError,
    ChildInit,
    ChildMessage,
    ChildReady,
    JobFailed,
    JobOutput,
    JobProgressed,
    JobSkipped,
    LoadScript,
    RunJob,
    WorkerDecoder,
    WorkerMessage,
    decode_from_child,
    input_line,
)

ID, LEASE = 123456789012, 3

FROM_WORKER: list[WorkerMessage] = [
    ChildInit(),
    ChildInit(paths=("/w/one", "/w/two ü"), max_memory_bytes=512 << 20, capture_output=True),
    LoadScript(0, "/cache/scripts/ab.py"),
    LoadScript(7, "/cache/scripts/ab.py", script_name="montecarlo.py"),
    RunJob(ID, LEASE, 2, 0, "handler-1", 'a "quoted" name\twith tab ü', b'{"a": [1, 2]}'),
    RunJob(1, 0, 1, 3, "h", "", b"null"),
    CancelJob(ID, LEASE),
]

FROM_CHILD: list[ChildMessage] = [
    ChildReady(),
    JobProgressed(ID, LEASE, 42.5, "step 3\nof 4"),
    JobProgressed(ID, LEASE, 100.0, ""),
    JobOutput(ID, LEASE, 0.000123457, b'{"value":1,"text":"a b\\n"}'),  # durations travel in whole nanoseconds
    JobOutput(ID, LEASE, 0.0, b"null"),
    JobFailed(ID, LEASE, ChildError("ValueError", "bad input", "Traceback ...\n  x\n"), 1.5),
    JobFailed(ID, LEASE, ChildError("InputNotJson", "the job's input is not JSON: ..."), 0.0),
    JobSkipped(ID, LEASE),
]


@pytest.mark.parametrize("message", FROM_WORKER, ids=lambda m: type(m).__name__)
def test_messages_from_the_worker_round_trip(message: WorkerMessage) -> None:
    decoder = WorkerDecoder()
    decoded = decoder.feed(message.encode() + message.encode())
    assert decoded == [message, message]
    assert all(type(d) is type(message) for d in decoded)
    decoder.end()  # nothing left inside a message


def test_messages_from_the_worker_come_whole_however_the_stream_is_cut() -> None:
    """A pipe's reads cut anywhere: inside a job line, between a job line and its input, inside the input."""
    data = b"".join(m.encode() for m in FROM_WORKER) * 3
    expected = FROM_WORKER * 3
    for size in (1, 2, 7, 64, len(data)):
        decoder = WorkerDecoder()
        decoded = [m for at in range(0, len(data), size) for m in decoder.feed(data[at : at + size])]
        decoder.end()
        assert decoded == expected, size


@pytest.mark.parametrize("message", FROM_CHILD, ids=lambda m: type(m).__name__)
def test_messages_from_the_child_round_trip(message: ChildMessage) -> None:
    line = message.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = decode_from_child(line[:-1])
    assert decoded == message
    assert type(decoded) is type(message)  # NamedTuples of equal fields compare equal


def test_the_wire_format_is_the_documented_one() -> None:
    assert RunJob(7, 1, 2, 0, "h", "n", b"[1]").encode() == b'[7,1,2,0,"h","n"]\n[1]\n'
    assert CancelJob(7, 1).encode() == b'{"cancel":[7,1]}\n'
    assert JobOutput(7, 1, 0.25, b'"x"').encode() == b'= 7 1 250000000 "x"\n'
    assert JobSkipped(7, 1).encode() == b'{"job_id":7,"lease_no":1,"skipped":true}\n'
    assert json.loads(ChildInit().encode()) == {"init": {"paths": []}}
    assert json.loads(LoadScript(2, "s.py").encode()) == {"load": {"no": 2, "script": "s.py"}}


def test_a_duration_keeps_its_nanoseconds() -> None:
    decoded = decode_from_child(JobOutput(ID, LEASE, 1.0000000014, b"null").encode()[:-1])
    assert isinstance(decoded, JobOutput)
    assert decoded.duration_seconds == 1.000000001


def test_an_output_holding_spaces_and_equals_signs_stays_whole() -> None:
    output = b'{"a": "= 1 2 3 = "}'
    assert decode_from_child(JobOutput(ID, LEASE, 1.0, output).encode()[:-1]) == JobOutput(ID, LEASE, 1.0, output)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"Traceback (most recent call last):", "not JSON"),
        (b"", "not JSON"),
        (b"= 1 2", "not enough values to unpack"),
        (b"= one 2 0.1 null", "invalid literal for int()"),
        (b"= 1 2 fast null", "invalid literal for int()"),
        (b"= 1 2 0.5 null", "invalid literal for int()"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"ready": false}', "no 'job_id'"),
        (b'{"job_id": 1, "lease_no": 1}', "neither 'error' nor 'skipped'"),
        (b'{"job_id": "1", "lease_no": 1, "skipped": true}', "'job_id' must be an integer, not str"),
        (b'{"job_id": 1, "lease_no": 1, "error": "boom", "duration_seconds": 0}', "'error' must be an object, not str"),
        (
            b'{"job_id": 1, "lease_no": 1, "error": {"type": "E", "message": "m", "traceback": ""}}',
            "no 'duration_seconds'",
        ),
        (b'{"progress": {"job_id": 1, "lease_no": 1, "percent": "half", "text": ""}}', "'percent' must be a number"),
    ],
)
def test_a_malformed_line_from_the_child_is_refused_with_a_clear_error(line: bytes, says: str) -> None:
    with pytest.raises(MalformedLineError, match="malformed line from the executor child") as caught:
        decode_from_child(line)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"garbage\n", "not JSON"),
        (
            b'[1, 2, 3, "h", "n"]\nnull\n',
            "a job line must be [job id, lease no, attempt, script no, handler id, job name]",
        ),
        (b'[1, 2, 3, "0", "h", "n"]\nnull\n', "a job line must be"),
        (b'[1, 2, 3, 0, "h", "n"]\n', "the job's input line is missing"),
        (b'[1, 2, 3, 0, "h", "n"]\nnull', "the job's input line is missing"),
        (b'{"cancel": [1]}\n', "'cancel' must be [job id, lease no]"),
        (b'{"load": {"no": 1}}\n', "no 'script'"),
        (b'{"load": {"no": "1", "script": "s.py"}}\n', "'no' must be an integer"),
        (b'{"init": {"paths": [1]}}\n', "'paths' must hold strings"),
        (b'{"init": {"max_memory_bytes": "1G"}}\n', "'max_memory_bytes' must be an integer"),
        (b'{"stop": true}\n', "neither a job nor 'cancel' nor 'load' nor 'init'"),
        (b'{"cancel": [1, 2]}', "the line does not end"),
    ],
)
def test_a_malformed_line_from_the_worker_is_refused_with_a_clear_error(data: bytes, says: str) -> None:
    with pytest.raises(MalformedLineError, match="malformed line from the worker") as caught:
        _decode_all(data)
    assert says in str(caught.value)


def _decode_all(data: bytes) -> list[WorkerMessage]:
    decoder = WorkerDecoder()
    messages = decoder.feed(data)
    decoder.end()
    return messages


def test_input_lines_are_one_line_of_the_leased_text() -> None:
    assert input_line(b'{"a": [1, 2]}') == b'{"a": [1, 2]}'
    assert input_line(b"") == b"null"
    assert input_line(b'{\n  "a": "b"\n}\n') == b'{"a": "b"}'
