"""Job script metadata: read without running, every key checked."""

from __future__ import annotations

from datetime import time

import pytest

from netdist import jobscript
from netdist.errors import JobScriptError

BASE = """\
package = "calc"
handler = "Calculator"
job = "add"
"""


def script(tool: str = BASE, custom: str = "", body: str = "def process(job_input, ctx):\n    return 1\n") -> str:
    lines = ["# /// script", "# [tool.netdist]"]
    lines += [f"# {line}" if line else "#" for line in tool.strip().splitlines()]
    if custom:
        lines.append("# [tool.netdist.settings]")
        lines += [f"# {line}" for line in custom.strip().splitlines()]
    lines.append("# ///")
    return "\n".join(lines) + "\n" + body


def test_design_example_parses_every_setting() -> None:
    parsed = jobscript.parse(
        script(
            BASE
            + """\
auto-start = true
schedule = "*/5 * * * *"
idle-time = "22:00-06:00"
time-zone = "Europe/Zurich"
job-timeout = 30
max-parallel-jobs = 2
max-sequenced-errors = 5
max-attempts = 4
clients-allowed = [{ name = "^lab-.*" }, { label = "gpu=1" }]
clients-denied = [{ id = "abc" }]
priority = 2.5
max-jobs-per-client = 1
max-time-per-client-per-day = 3600
""",
            custom="negate_result = true",
        )
    )
    s = parsed.settings
    assert (s.package, s.handler, s.job) == ("calc", "Calculator", "add")
    assert s.auto_start and s.schedule == "*/5 * * * *"
    assert s.idle_time == jobscript.IdleWindow(start=time(22, 0), end=time(6, 0))
    assert s.job_timeout_seconds == 30.0 and s.max_parallel_jobs == 2 and s.max_sequenced_errors == 5
    assert s.max_attempts == 4 and s.priority == 2.5 and s.max_jobs_per_client == 1
    assert s.max_time_per_client_per_day_seconds == 3600.0
    assert s.clients_allowed == (jobscript.ClientSelector(name="^lab-.*"), jobscript.ClientSelector(label="gpu=1"))
    assert s.clients_denied == (jobscript.ClientSelector(id="abc"),)
    assert parsed.custom == {"negate_result": True}


def test_defaults() -> None:
    s = jobscript.parse(script()).settings
    assert not s.auto_start and s.schedule is None and s.idle_time is None
    assert s.max_attempts == 3 and s.priority == 1.0 and s.job_timeout_seconds is None


def test_the_script_is_not_executed() -> None:
    body = "raise SystemExit('ran!')\ndef process(job_input, ctx):\n    return 1\n"
    assert jobscript.parse(script(body=body)).settings.job == "add"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "red"', "unknown key 'colour'"),
        ("auto-start = 1", "'auto-start': expected true or false, got 1"),
        ('schedule = "every day"', "'schedule': 'every day' is not a valid cron expression"),
        ('idle-time = "22:00"', "'idle-time': expected a window like \"22:00-06:00\", got '22:00'"),
        ('idle-time = "25:00-06:00"', "'idle-time': '25:00' is not a time of day as HH:MM"),
        ('idle-time = "06:00-06:00"', "'idle-time': the window '06:00-06:00' is empty"),
        ('time-zone = "Mars/Olympus"', "'time-zone': unknown time zone 'Mars/Olympus'"),
        ("job-timeout = 0", "'job-timeout': must be more than 0 seconds, got 0"),
        ('job-timeout = "30s"', "'job-timeout': expected a number of seconds, got '30s'"),
        ("max-parallel-jobs = 0", "'max-parallel-jobs': must be at least 1, got 0"),
        ("max-parallel-jobs = 1.5", "'max-parallel-jobs': expected a whole number, got 1.5"),
        ("max-sequenced-errors = -1", "'max-sequenced-errors': must be at least 1, got -1"),
        ("max-attempts = true", "'max-attempts': expected a whole number, got True"),
        ('clients-allowed = "lab"', "'clients-allowed': expected a list of selectors"),
        ('clients-denied = [{ host = "x" }]', "'clients-denied'[0]: expected a table with one of name, id, label"),
        ('clients-allowed = [{ name = "(" }]', "'clients-allowed'[0]: invalid regular expression '('"),
        ("priority = 0", "'priority': expected a number above 0, got 0"),
        ("max-jobs-per-client = 0", "'max-jobs-per-client': must be at least 1, got 0"),
        ("max-time-per-client-per-day = -5", "'max-time-per-client-per-day': must be more than 0 seconds, got -5"),
    ],
)
def test_each_wrong_value_is_refused_naming_the_key(extra: str, message: str) -> None:
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(BASE + extra))
    assert message in str(err.value)


@pytest.mark.parametrize("missing", ["package", "handler", "job"])
def test_required_keys(missing: str) -> None:
    tool = "\n".join(line for line in BASE.splitlines() if not line.startswith(missing))
    with pytest.raises(JobScriptError, match=f"missing key '{missing}'"):
        jobscript.parse(script(tool))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def process(x, ctx): pass\n", "no metadata block"),
        (script(body="x = 1\n"), "defines no top-level function 'process"),
        (script(body="def process(:\n"), "script is not valid Python: line"),
        ("# /// script\n# [tool.other]\n# a = 1\n# ///\n", "no [tool.netdist] table"),
        ("# /// script\n# [tool.netdist\n# ///\n", "metadata block is not valid TOML"),
        (script(BASE + 'settings = "x"'), "'settings': expected a table"),
    ],
)
def test_malformed_scripts(source: str, message: str) -> None:
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(source)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        ("22:00-06:00", [time(23, 0), time(0, 0), time(5, 59)], [time(6, 0), time(12, 0), time(21, 59)]),
        ("09:00-17:00", [time(9, 0), time(16, 59)], [time(8, 59), time(17, 0), time(23, 0)]),
    ],
)
def test_idle_window_across_midnight(window: str, inside: list[time], outside: list[time]) -> None:
    w = jobscript.parse(script(BASE + f'idle-time = "{window}"')).settings.idle_time
    assert w is not None
    assert all(w.contains(t) for t in inside)
    assert not any(w.contains(t) for t in outside)


def test_selectors_match_name_id_and_label() -> None:
    labels = {"gpu": "1", "zone": "b"}
    match = jobscript.ClientSelector
    assert match(name="^lab-").matches(worker_id="x", worker_name="lab-3", labels={})
    assert not match(name="^lab-").matches(worker_id="x", worker_name="home-3", labels={})
    assert match(id="x").matches(worker_id="x", worker_name="n", labels={})
    assert match(label="gpu=1").matches(worker_id="x", worker_name="n", labels=labels)
    assert not match(label="gpu=2").matches(worker_id="x", worker_name="n", labels=labels)
    assert match(label="zone").matches(worker_id="x", worker_name="n", labels=labels)
