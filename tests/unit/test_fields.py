"""Field limits and the refusal of control characters in what a worker's Hello names."""

from __future__ import annotations

import pytest

from netdist import fields
from netdist.api.v1 import jobs_pb2
from netdist.errors import InvalidArgumentError
from netdist.server.job_service import _error, _worker_info

# One of each class that must not reach a terminal: C0 (ESC, BEL, CR, LF, NUL, TAB), DEL, C1 (CSI, NEL),
# the bidi embeddings, overrides, isolates and marks, and the line and paragraph separators.
UNSAFE = [
    "\x1b",
    "\x07",
    "\r",
    "\n",
    "\x00",
    "\t",
    "\x7f",
    "\x9b",
    "\x85",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
    "\u2028",
    "\u2029",
]
SAFE = ["lab-1", "日本語のホスト", "e\u0301te\u0301", "👩\u200d🔬", "[bold]x[/bold]", "a b", "x=y", "\u00a0", "ÿ"]


@pytest.mark.parametrize("char", UNSAFE)
def test_an_identifier_with_any_control_character_is_refused_naming_the_field(char: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        fields.check_identifier("Hello.name", f"ok{char}ok", 200)
    assert err.value.message.startswith("Hello.name holds a control character")
    assert f"U+{ord(char):04X} at position 2" in err.value.message
    assert char not in err.value.message


@pytest.mark.parametrize("text", SAFE)
def test_wide_combining_and_bracketed_text_is_a_fine_identifier(text: str) -> None:
    assert fields.check_identifier("Hello.name", text, 200) == text


def test_identifier_length_and_emptiness() -> None:
    assert fields.check_identifier("f", "x" * 200, 200) == "x" * 200
    with pytest.raises(InvalidArgumentError, match=r"^f is longer than 200 characters \(201\)$"):
        fields.check_identifier("f", "x" * 201, 200)
    with pytest.raises(InvalidArgumentError, match=r"^f is empty$"):
        fields.check_identifier("f", "", 200, empty_ok=False)
    assert fields.check_identifier("f", "", 200) == ""


def test_clean_text_clips_first_then_turns_controls_into_spaces_or_nothing() -> None:
    assert fields.clean_text("50%\tstep\r\n2\x1b[2J\u202eevil\x07", 500) == "50% step  2[2Jevil"
    assert fields.clean_text("x" * 10_000, 500) == "x" * 500
    assert fields.clean_text("日本語 e\u0301", 500) == "日本語 e\u0301"
    for char in UNSAFE:
        assert fields.UNSAFE.search(fields.clean_text(f"a{char}b", 10)) is None


def hello(**kw: object) -> jobs_pb2.Hello:
    base: dict[str, object] = {"worker_id": "abc123", "name": "w1", "slots": 2, "hostname": "host", "version": "1.0"}
    base.update(kw)
    return jobs_pb2.Hello(**base)  # type: ignore[arg-type]


def refusal(message: jobs_pb2.Hello) -> str:
    with pytest.raises(InvalidArgumentError) as err:
        _worker_info(message)
    return err.value.message


def test_a_fine_hello_passes_with_its_labels() -> None:
    info = _worker_info(hello(labels={"site": "lab", "gpu": ""}))
    assert (info.worker_id, info.name, dict(info.labels), info.slots) == ("abc123", "w1", {"site": "lab", "gpu": ""}, 2)
    assert _worker_info(hello(name="")).name == "host"  # the name falls back to the hostname, then the id
    assert _worker_info(hello(name="", hostname="")).name == "abc123"


def test_hello_identifiers_with_escapes_are_refused_naming_the_field() -> None:
    assert refusal(hello(name="w\x1b[2J")).startswith("Hello.name holds a control character (U+001B")
    assert refusal(hello(name="w1\nw2   fake row")).startswith("Hello.name holds a control character (U+000A")
    assert refusal(hello(hostname="\x1b]0;pwned\x07")).startswith("Hello.hostname holds a control character")
    assert refusal(hello(worker_id="ab\u202ecd")).startswith("Hello.worker_id holds a control character (U+202E")
    assert refusal(hello(labels={"si\x1bte": "lab"})).startswith("Hello.labels key holds a control character")
    assert refusal(hello(labels={"site": "l\u2066ab"})).startswith("Hello.labels['site'] holds a control character")
    assert refusal(hello(labels={"": "x"})) == "Hello.labels key is empty"
    assert refusal(hello(worker_id="")) == "Hello.worker_id is empty"


def test_hello_limits() -> None:
    assert _worker_info(hello(name="n" * 200, hostname="h" * 200)).name == "n" * 200
    assert refusal(hello(name="n" * 201)) == "Hello.name is longer than 200 characters (201)"
    assert refusal(hello(hostname="h" * 20_000_000)) == "Hello.hostname is longer than 200 characters (20000000)"
    assert refusal(hello(worker_id="i" * 65)).startswith("Hello.worker_id is longer than 64 characters")
    many = {f"k{i}": "v" for i in range(100_000)}
    assert refusal(hello(labels=many)) == "Hello.labels holds 100000 labels; at most 64"
    assert len(_worker_info(hello(labels=dict(list(many.items())[:64]))).labels) == 64
    assert refusal(hello(labels={"k" * 65: "v"})).startswith("Hello.labels key is longer than 64 characters")
    assert refusal(hello(labels={"k": "v" * 201})).startswith("Hello.labels['k'] is longer than 200 characters")


def test_a_failed_jobs_error_is_clipped_and_keeps_its_lines() -> None:
    error = _error(jobs_pb2.JobError(type="Value\x1bError", message="m\n" * 10_000, traceback="t\n" * 100_000))
    assert error["type"] == "ValueError"
    assert len(error["message"]) == fields.MAX_ERROR_MESSAGE and error["message"].startswith("m\nm\n")
    assert len(error["traceback"]) == fields.MAX_TRACEBACK
