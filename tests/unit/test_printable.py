"""Whatever a server sends, netdist-admin prints nothing that steers a terminal and forges no row."""

from __future__ import annotations

import json
import re
from typing import TypeVar

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console, RenderableType

from netdist import fields
from netdist.adminctl import cli, command_io, dashboard, handler_render, job_render, render, view
from netdist.api.v1 import admin_pb2, packages_pb2
from netdist.errors import NetDistError
from netdist.exit_codes import ExitCode
from netdist.printable import printable, printable_json, printable_lines

# Clear the screen, set the window title, forge a row, flip the text, CSI as one C1 byte, DEL, markup, emoji.
HOSTILE = (
    "A\x1b[2J\x1b]0;pwned\x07\r\nFORGED │ row\u202eevil\u2066x\u2069\x9b31m\x7f\x00\x08\t"
    "[bold]m[/bold] [link=http://x]l[/link] :warning: 日本 e\u0301\u2028FORGED"
)
SGR = re.compile("\x1b\\[[0-9;]*m")  # what rich itself writes for styles
JSON_FIELDS = {"settings_json", "custom_settings_json", "input_json", "output_json", "extra_json", "error"}
M = TypeVar("M", bound=Message)


def fill(message: Message, value: str, json_value: str) -> Message:
    """Every string field, in nested messages, lists and maps too, set to ``value``."""
    for f in message.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            v = json_value if f.name in JSON_FIELDS else value
            if f.is_repeated:
                getattr(message, f.name).extend([v, v])
            else:
                setattr(message, f.name, v)
        elif f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type is not None:
            if f.message_type.GetOptions().map_entry:
                getattr(message, f.name).update({value: value, "k": value})
            elif f.is_repeated:
                fill(getattr(message, f.name).add(), value, json_value)
            else:
                fill(getattr(message, f.name), value, json_value)
    return message


def hostile(cls: type[M], json_value: str) -> M:
    """A message with hostile text in every string, and set where a view shows a field only when set."""
    m = cls()
    fill(m, HOSTILE, json_value)
    for name in ("leased_at", "connected", "has_total", "jobs_total", "created_at", "at"):
        if name in m.DESCRIPTOR.fields_by_name:
            setattr(m, name, True if name in {"connected", "has_total"} else 1)
    return m


def views(json_value: str) -> list[RenderableType]:
    h = hostile(admin_pb2.HandlerInfo, json_value)
    w = hostile(admin_pb2.WorkerInfo, json_value)
    j = hostile(admin_pb2.JobInfo, json_value)
    g = hostile(admin_pb2.GetJobResponse, json_value)
    p = hostile(packages_pb2.PackageInfo, json_value)
    s = hostile(admin_pb2.GetStatusResponse, json_value)
    s.store_state = HOSTILE  # not "ok": the store line shows too
    return [
        render.handlers_table([h]),
        handler_render.handler_detail(h),
        job_render.jobs_table([j]),
        job_render.job_detail(g),
        render.workers_table([w]),
        render.packages_table([p]),
        render.status_table(s),
        dashboard.build([h], [w], address=HOSTILE, error=HOSTILE, now=1.0),
    ]


def printed(renderable: RenderableType, *, color: bool) -> str:
    console = Console(width=4000, color_system="truecolor" if color else None, force_terminal=color, highlight=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def assert_safe(out: str) -> None:
    bare = SGR.sub("", out)
    leftover = {c for c in fields.UNSAFE.findall(bare) if c != "\n"}
    assert not leftover, leftover
    for line in bare.splitlines():
        assert not line.lstrip("│┃ ").startswith("FORGED"), line  # no line of its own, no row


@pytest.mark.parametrize(
    "json_value", [HOSTILE, json.dumps({HOSTILE: [HOSTILE]}, ensure_ascii=False)], ids=["raw", "json"]
)
@pytest.mark.parametrize("color", [False, True])
def test_every_view_is_safe_whatever_the_server_sends(json_value: str, color: bool) -> None:
    for renderable in views(json_value):
        out = printed(renderable, color=color)
        assert_safe(out)
        assert "\\x1b[2J" in out and "\\u202eevil" in out  # shown, visibly, not hidden
        assert "\\n" in out and "\\x9b31m" in out and "\\x7f" in out


def test_markup_and_emoji_codes_in_data_stay_literal_and_wide_text_stays() -> None:
    out = printed(views(HOSTILE)[0], color=False)
    assert "[bold]m[/bold] [link=http://x]l[/link] :warning: 日本 e\u0301" in out


def test_json_settings_stay_readable_json_with_escapes() -> None:
    h = admin_pb2.HandlerInfo(custom_settings_json=json.dumps({"name": "日本\u202e\x1b"}, ensure_ascii=False))
    out = printed(handler_render.handler_detail(h), color=False)
    assert '"name": "日本\\u202e\\u001b"' in out


def test_log_lines_keep_a_tracebacks_lines_each_made_printable() -> None:
    line = admin_pb2.LogLine(
        at=1.0,
        level="ERROR\x1b[2J",
        source="job\r",
        message=('Traceback (most recent call last):\r\n  File "x.py", line 1\x1b]0;t\x07\nValueError: \u202eboom'),
    )
    out = printed(render.log_line(line), color=True)
    assert_safe(out)
    lines = SGR.sub("", out).splitlines()
    assert len(lines) == 3
    assert "ERROR\\x1b[2J" in lines[0] and "job\\r: Traceback (most recent call last):" in lines[0]
    assert lines[1] == render.LOG_INDENT + '  File "x.py", line 1\\x1b]0;t\\x07'
    assert lines[2] == render.LOG_INDENT + "ValueError: \\u202eboom"  # indented: no line passes for an entry


def test_an_error_from_the_server_is_printed_safely(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._fail(NetDistError(f"no handler matches {HOSTILE!s}")) == ExitCode.FAILED
    assert_safe(capsys.readouterr().err)


def test_json_output_is_printable_ascii_for_every_listing(capsys: pytest.CaptureFixture[str]) -> None:
    for value in (
        [view.handler_dict(hostile(admin_pb2.HandlerInfo, HOSTILE))],
        [view.worker_dict(hostile(admin_pb2.WorkerInfo, HOSTILE))],
        [view.job_dict(hostile(admin_pb2.JobInfo, HOSTILE))],
        [view.package_dict(hostile(packages_pb2.PackageInfo, HOSTILE))],
        view.status_dict(hostile(admin_pb2.GetStatusResponse, HOSTILE)),
        [view.log_dict(hostile(admin_pb2.LogLine, HOSTILE))],
    ):
        command_io.emit_json(value)
        out = capsys.readouterr().out
        assert all(c == "\n" or " " <= c <= "~" for c in out)
        assert json.loads(out) == value  # and still the same data


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x1b", "\\x1b"),
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\x08", "\\x08"),
        ("\x1f", "\\x1f"),
        ("\r", "\\r"),
        ("\n", "\\n"),
        ("\t", "\\t"),
        ("\x7f", "\\x7f"),
        ("\x80", "\\x80"),
        ("\x9b", "\\x9b"),
        ("\x9f", "\\x9f"),
        ("\u202a", "\\u202a"),
        ("\u202b", "\\u202b"),
        ("\u202c", "\\u202c"),
        ("\u202d", "\\u202d"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u2067", "\\u2067"),
        ("\u2068", "\\u2068"),
        ("\u2069", "\\u2069"),
        ("\u200e", "\\u200e"),
        ("\u200f", "\\u200f"),
        ("\u061c", "\\u061c"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ],
)
def test_printable_shows_every_control_class_as_a_visible_escape(char: str, shown: str) -> None:
    assert printable(f"a{char}b") == f"a{shown}b"
    assert fields.UNSAFE.search(printable_lines(f"a{char}b").replace("\n", "")) is None


@pytest.mark.parametrize(
    "text",
    [
        "日本語のジョブ",
        "e\u0301te\u0301",
        "👩\u200d🔬 lab",
        "calc [x] [bold]y[/]",
        ":smile:",
        "ÿ\u00a0x",
        "C:\\path\\x1b",
        "",
    ],
)
def test_printable_keeps_ordinary_text_wide_and_combining_characters(text: str) -> None:
    assert printable(text) == text
    assert printable_lines(text) == text


def test_printable_lines_and_json() -> None:
    assert printable_lines("a\r\nb\x1b\nc\rd") == "a\nb\\x1b\nc\\rd"
    dumped = printable_json({"k\u202e": ["\x1b", "\x9b", "日本", "\x7f"]})
    assert fields.UNSAFE.search(dumped.replace("\n", "")) is None
    assert json.loads(dumped) == {"k\u202e": ["\x1b", "\x9b", "日本", "\x7f"]}
    assert "日本" in dumped
