"""The server <-> handler host channel: every message round-trips; garbage gets a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from netdist.jsonline import MalformedLineError
from netdist.server.host_protocol import (
    CallHook,
    CheckSettings,
    CreateMoreJobs,
    Frame,
    HandlerRaised,
    HandlerUpdate,
    Hook,
    HostLog,
    HostReply,
    HostRequest,
    Initialize,
    NewJob,
    ProcessFailures,
    ProcessResults,
    StoredFailure,
    StoredResult,
    decode_from_host,
    decode_request,
    encode_log,
    encode_reply,
    encode_request,
    host_frame,
    request_frame,
)

REQUESTS: list[HostRequest] = [
    Initialize(
        entry="pkg.mod:Handler",
        handler="primes",
        handler_id="h-1",
        job_name="Primes ü",
        settings={"limit": 10, "nested": {"a": [1, 2]}},
        state_json='{"n": 3}',
    ),
    CheckSettings(entry="pkg.mod:Handler", settings={"samples": "lots", "nested": {"a": [1]}}),
    *(CallHook(hook=hook) for hook in Hook),
    CreateMoreJobs(),
    ProcessResults(items=()),
    ProcessResults(items=(StoredResult(1, '{"a": 1}', "[1,2]", "null"), StoredResult(2, "3", "not json", '"x"'))),
    ProcessResults(items=(StoredResult(1, "1", "2", "null"),), more=True),
    ProcessFailures(items=(StoredFailure(7, "{}", "ValueError", "bad\nline", "Traceback ...", "null", 3),)),
]

REPLIES: list[HostReply] = [
    HandlerUpdate(state_json="{}", summary="", total=None),
    HandlerUpdate(
        jobs=(NewJob("1", "null"), NewJob('{"b": "\\n"}', '{"k": 2}')),
        state_json='{"n": 4}',
        summary="4 found",
        total=100,
        invalid=(3, 5),
    ),
    HandlerUpdate(jobs=(NewJob("1", "null"),), state_json="{}", summary="", total=None, more_jobs=1),
    HandlerUpdate(state_json="{}", summary="", total=None, more_jobs=0),
    HandlerUpdate(state_json="{}", summary="", total=None, more_jobs=0, seconds=0.0125),
    HandlerRaised(type="KeyError", message="'x'", traceback="Traceback (most recent call last):\n..."),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(request_: HostRequest) -> None:
    line = encode_request(41, request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_request(line) == (41, request_)
    assert decode_request(line.decode()) == (41, request_)


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_replies_round_trip(reply: HostReply) -> None:
    line = encode_reply(9, reply)
    assert line.count(b"\n") == 1
    assert decode_from_host(line) == (9, reply)


def test_log_lines_round_trip() -> None:
    record = HostLog(level="warning", message="two\nlines")
    assert decode_from_host(encode_log(record)) == record


def test_the_wire_format_is_the_documented_one() -> None:
    """The JSON shapes the module docstring draws (both sides are the same netdist, but the lines are read by humans)."""
    assert json.loads(encode_request(1, CallHook(hook=Hook.ON_STOP))) == {"id": 1, "op": "call", "name": "on_stop"}
    failures = ProcessFailures(items=(StoredFailure(7, "{}", "E", "m", "tb", "null", 2),))
    assert json.loads(encode_request(2, failures))["items"] == [
        [7, "{}", {"type": "E", "message": "m", "traceback": "tb"}, "null", 2]
    ]
    update = HandlerUpdate(jobs=(NewJob("1", "null"),), state_json="{}", summary="s", total=1)
    assert json.loads(encode_reply(3, update)) == {
        "id": 3,
        "ok": {"jobs": [["1", "null"]], "state": "{}", "summary": "s", "total": 1, "invalid": []},
    }


BIG_INPUT = json.dumps({"pad": "x" * 1_000_000, "quoted": '"\\'})
BIG_OUTPUT = json.dumps("ü" * 5000, ensure_ascii=False)  # 5,002 characters, 10,002 bytes of UTF-8
REQUESTS_WITH_TEXTS: list[HostRequest] = [
    ProcessResults(
        items=(StoredResult(1, BIG_INPUT, BIG_OUTPUT, "null"), StoredResult(2, "1", "2", "null")), more=True
    ),
    ProcessFailures(items=(StoredFailure(7, BIG_INPUT, "E", "m", "tb", BIG_OUTPUT, 3),)),
    Initialize(entry="m:C", handler="h", handler_id="h-1", job_name="j", settings={}, state_json=BIG_INPUT),
]
REPLY_WITH_TEXTS = HandlerUpdate(
    jobs=(NewJob(BIG_INPUT, "null"), NewJob("1", "2")), state_json=BIG_OUTPUT, summary="", total=None
)


def assert_read_both_ways(frame: bytes, read: Callable[[bytes], Frame], decode: Callable[..., Any], want: Any) -> None:
    """A frame with long texts: its line holds none of them, the texts follow it as the line sizes them,
    and it decodes to ``want`` whole, or as the readers take it: the line, then the bytes it says."""
    line, _, texts = frame.partition(b"\n")
    assert len(line) < 300
    sizes = json.loads(line)["texts"]
    assert texts.startswith(BIG_INPUT.encode()) or texts.startswith(BIG_OUTPUT.encode())
    assert sum(sizes) == len(texts) and set(sizes) <= {len(BIG_INPUT), len(BIG_OUTPUT.encode())}
    assert decode(frame) == want
    header = read(line + b"\n")
    assert header.text_bytes == len(texts)
    assert decode(header, texts) == want


@pytest.mark.parametrize("request_", REQUESTS_WITH_TEXTS, ids=lambda r: type(r).__name__)
def test_long_texts_travel_after_the_line_as_raw_bytes(request_: HostRequest) -> None:
    """Texts of TEXT_INLINE_MAX characters or more are not escaped into the line: their UTF-8 bytes follow it."""
    assert_read_both_ways(encode_request(3, request_), request_frame, decode_request, (3, request_))


def test_a_replys_long_texts_travel_after_its_line_too() -> None:
    assert_read_both_ways(encode_reply(3, REPLY_WITH_TEXTS), host_frame, decode_from_host, (3, REPLY_WITH_TEXTS))


def test_a_results_frame_is_the_documented_one() -> None:
    request = ProcessResults(items=(StoredResult(41, BIG_INPUT, BIG_OUTPUT, "null"),))
    line, _, texts = encode_request(7, request).partition(b"\n")
    assert json.loads(line) == {
        "id": 7,
        "op": "results",
        "items": [[41, 0, 1, "null"]],
        "texts": [len(BIG_INPUT), len(BIG_OUTPUT.encode())],
    }
    assert texts == BIG_INPUT.encode() + BIG_OUTPUT.encode()


UPDATE = b'"ok": {"jobs": [], "state": "{}", "summary": "", "total": null, "invalid": []}'


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (b'{"id": 1, ' + UPDATE + b', "texts": [-1]}\n', "'texts' must be a list of sizes, not '[-1]'"),
        (b'{"id": 1, ' + UPDATE + b', "texts": "12"}\n', "'texts' must be a list of sizes"),
        (b'{"id": 1, ' + UPDATE + b', "texts": [3]}\nab', "2 bytes of texts after the line, where it says 3"),
        (
            b'{"id": 1, "ok": {"jobs": [[0, 1]], "state": "{}", "summary": "", "total": null, "invalid": []},'
            b' "texts": [1]}\n1',
            "a new job must be [input, extra], not '[0, 1]'",
        ),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": 0, "summary": "", "total": null, "invalid": []},'
            b' "texts": [2]}\n\xff\xfe',
            "text 0 after the line is not UTF-8",
        ),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": null, "summary": "", "total": null, "invalid": []}}\n',
            "'state' must be a string or the number of a text after the line, not 'None'",
        ),
        (b'{"id": 1, ' + UPDATE + b', "texts": [268435456, 1]}\n', "268435457 bytes, over the 268435456 allowed"),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": "{}", "summary": "", "total": null, "invalid": [], "seconds": -1}}\n',
            "'seconds' must be a duration, not '-1.0'",
        ),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": "{}", "summary": "", "total": null, "invalid": [], "seconds": 1e999}}\n',
            "'seconds' must be a duration, not 'inf'",
        ),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": "{}", "summary": "", "total": null, "invalid": [], "seconds": "1"}}\n',
            "'seconds' must be a number",
        ),
    ],
)
def test_a_frame_whose_texts_do_not_add_up_is_refused(frame: bytes, says: str) -> None:
    with pytest.raises(MalformedLineError, match="malformed line from the handler host") as caught:
        decode_from_host(frame)
    assert says in str(caught.value)


def test_a_results_item_naming_a_text_that_is_not_there_is_refused() -> None:
    frame = b'{"id": 1, "op": "results", "items": [[1, 0, 2, "null"]], "texts": [1, 1]}\n12'
    with pytest.raises(MalformedLineError, match="a result item must be"):
        decode_request(frame)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"garbage\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object but list"),
        (b'{"op": "more"}\n', "no 'id'"),
        (b'{"id": "1", "op": "more"}\n', "'id' must be an integer, not str"),
        (b'{"id": true, "op": "more"}\n', "'id' must be an integer, not bool"),
        (b'{"id": 1, "op": "explode"}\n', "unknown op 'explode'"),
        (b'{"id": 1, "op": "call", "name": "process_result"}\n', "unknown hook 'process_result'"),
        (b'{"id": 1, "op": "init", "entry": "m:C"}\n', "no 'handler'"),
        (b'{"id": 1, "op": "results", "items": [[1, "{}", "1"]]}\n', "a result item must be"),
        (b'{"id": 1, "op": "results", "items": {"a": 1}}\n', "'items' must be a list, not dict"),
        (b'{"id": 1, "op": "failures", "items": [[1, "{}", {"type": "E"}, "null", 1]]}\n', "no 'message'"),
    ],
)
def test_a_malformed_request_is_refused_with_a_clear_error(line: bytes, says: str) -> None:
    with pytest.raises(MalformedLineError, match="malformed request to the handler host") as caught:
        decode_request(line)
    assert says in str(caught.value)
    assert repr(line[:20])[2:-1] in str(caught.value)  # the line is quoted


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"Traceback (most recent call last):\n", "not JSON"),
        (b'{"id": 1}\n', "neither 'ok' nor 'error' nor 'log'"),
        (b'{"log": "hello"}\n', "'log' must be an object, not str"),
        (b'{"log": {"level": "info"}}\n', "no 'message'"),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": "{}", "summary": "", "total": "many", "invalid": []}}\n',
            "'total' must be an integer, not str",
        ),
        (
            b'{"id": 1, "ok": {"jobs": [["1"]], "state": "{}", "summary": "", "total": null, "invalid": []}}\n',
            "a new job must be [input, extra]",
        ),
        (
            b'{"id": 1, "ok": {"jobs": [], "state": "{}", "summary": "", "total": null, "invalid": ["x"]}}\n',
            "'invalid' must hold job ids",
        ),
        (b'{"id": 1, "error": {"type": "E", "message": "m"}}\n', "no 'traceback'"),
    ],
)
def test_a_malformed_line_from_the_host_is_refused_with_a_clear_error(line: bytes, says: str) -> None:
    with pytest.raises(MalformedLineError, match="malformed line from the handler host") as caught:
        decode_from_host(line)
    assert says in str(caught.value)


def test_a_long_malformed_line_is_quoted_only_in_part() -> None:
    with pytest.raises(MalformedLineError) as caught:
        decode_from_host(b"x" * 100_000)
    assert len(str(caught.value)) < 500
    assert str(caught.value).endswith(" ...")
