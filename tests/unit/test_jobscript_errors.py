"""Wrong values test_jobscript.py does not cover: each message names the key and the problem."""

from __future__ import annotations

import pytest

from netdist import jobscript
from netdist.errors import JobScriptError
from tests.unit.test_jobscript import BASE, script


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ('package = 3\nhandler = "H"\njob = "j"', "'package': expected a non-empty string, got 3"),
        ('package = "p"\nhandler = " "\njob = "j"', "'handler': expected a non-empty string, got ' '"),
        ('package = "p"\nhandler = "H"\njob = ""', "'job': expected a non-empty string, got ''"),
        (BASE + 'auto-start = "yes"', "'auto-start': expected true or false, got 'yes'"),
        (BASE + "schedule = 5", "'schedule': expected a non-empty string, got 5"),
        (BASE + 'schedule = "61 * * * *"', "'schedule': '61 * * * *' is not a valid cron expression"),
        (BASE + "idle-time = 22", "'idle-time': expected a non-empty string, got 22"),
        (BASE + 'idle-time = "22:00-6"', "'idle-time': '6' is not a time of day as HH:MM"),
        (BASE + 'idle-time = "ab:cd-06:00"', "'idle-time': 'ab:cd' is not a time of day as HH:MM"),
        (BASE + "time-zone = 1", "'time-zone': expected a non-empty string, got 1"),
        (BASE + "job-timeout = true", "'job-timeout': expected a number of seconds, got True"),
        (BASE + "job-timeout = -1.5", "'job-timeout': must be more than 0 seconds, got -1.5"),
        (BASE + 'max-sequenced-errors = "3"', "'max-sequenced-errors': expected a whole number, got '3'"),
        (BASE + "max-attempts = 0", "'max-attempts': must be at least 1, got 0"),
        (BASE + "max-jobs-per-client = 2.0", "'max-jobs-per-client': expected a whole number, got 2.0"),
        (
            BASE + 'max-time-per-client-per-day = "1h"',
            "'max-time-per-client-per-day': expected a number of seconds, got '1h'",
        ),
        (BASE + "priority = true", "'priority': expected a number above 0, got True"),
        (BASE + 'priority = "high"', "'priority': expected a number above 0, got 'high'"),
        (BASE + "priority = -1", "'priority': expected a number above 0, got -1"),
        (BASE + 'clients-allowed = { name = "lab" }', "'clients-allowed': expected a list of selectors"),
        (BASE + 'clients-allowed = ["lab"]', "'clients-allowed'[0]: expected a table with one of name, id, label"),
        (
            BASE + 'clients-denied = [{ name = "a", id = "b" }]',
            "'clients-denied'[0]: expected a table with one of name, id, label",
        ),
        (BASE + 'clients-allowed = [{ id = "" }]', "'clients-allowed'[0]: id must be a non-empty string, got ''"),
        (BASE + "clients-denied = [{ label = 1 }]", "'clients-denied'[0]: label must be a non-empty string, got 1"),
        (
            BASE + 'clients-allowed = [{ name = "^ok" }, { name = "[" }]',
            "'clients-allowed'[1]: invalid regular expression '['",
        ),
    ],
)
def test_wrong_value_names_the_key(tool: str, message: str) -> None:
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(tool))
    assert message in str(err.value)


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(JobScriptError) as err:
        jobscript.parse(script(BASE + "max-parallel = 2"))
    assert "unknown key 'max-parallel'" in str(err.value) and "max-parallel-jobs" in str(err.value)


@pytest.mark.parametrize("cron", ["*/5 * * * *", "0 22 * * mon-fri", "* * * * * */2", "@hourly"])
def test_schedules_croniter_accepts(cron: str) -> None:
    """Five fields, a sixth for seconds (croniter 7), and the @ shorthands."""
    assert jobscript.parse(script(BASE + f'schedule = "{cron}"')).settings.schedule == cron
