"""Names and string settings of a job script: printable and short, or refused naming the key."""

from __future__ import annotations

import json

import pytest

from netdist import jobscript
from netdist.errors import JobScriptError
from tests.unit.test_jobscript import BASE, script

CONTROLS = ["\x1b", "\x07", "\x00", "\r", "\t", "\x7f", "\x9b", "\u202e", "\u2066", "\u200f", "\u061c"]


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string with \\u escapes is a valid TOML basic string


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("key", ["package", "handler", "job"])
def test_a_control_character_in_a_name_is_refused_naming_the_key(key: str, control: str) -> None:
    tool = BASE.replace(f"{key} = ", f"{key} = {toml_string('ok' + control + 'ok')} #", 1)
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(tool))
    assert str(err.value) == (
        f"'{key}': holds the control character U+{ord(control):04X} at position 2; only printable text is allowed"
    )


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ('schedule = "*/5 * * * *\\u001b"', "'schedule'"),
        ('idle-time = "22:00-06:00\\u009b"', "'idle-time'"),
        ('time-zone = "Europe/Zurich\\u202e"', "'time-zone'"),
        ('clients-allowed = [{ name = "^lab\\u001b[2J" }]', "'clients-allowed'[0].name"),
        ('clients-denied = [{ id = "a" }, { label = "gpu\\u0007" }]', "'clients-denied'[1].label"),
    ],
)
def test_a_control_character_in_any_string_setting_is_refused(line: str, where: str) -> None:
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(BASE + line))
    assert str(err.value).startswith(f"{where}: holds the control character U+")


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ('job = "' + "j" * 201 + '"', "'job'"),
        ('schedule = "' + "*" * 300 + '"', "'schedule'"),
        ('clients-allowed = [{ name = "' + "a" * 201 + '" }]', "'clients-allowed'[0].name"),
    ],
)
def test_an_over_long_string_is_refused_naming_the_key(line: str, where: str) -> None:
    tool = BASE.replace('job = "add"\n', "") + line if line.startswith("job") else BASE + line
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(tool))
    assert f"{where}: " in str(err.value) and "characters is over the limit of 200" in str(err.value)


def test_the_limit_itself_and_any_printable_script_are_fine() -> None:
    name = "Zürich 東京 ✓ " + "x" * 188
    assert len(name) == jobscript.MAX_TEXT_CHARS
    assert jobscript.parse(script(BASE.replace('job = "add"', f"job = {toml_string(name)}"))).settings.job == name


def test_a_refused_value_is_quoted_short_not_echoed_whole() -> None:
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(BASE + "auto-start = [" + "1, " * 50_000 + "]"))
    assert str(err.value).startswith("'auto-start': expected true or false, got [1, 1")
    assert len(str(err.value)) < 400 and "characters)" in str(err.value)
