"""Cron schedules on real servers whose processes run in other zones (``TZ``), not UTC.

A naive local time handed to croniter was read as UTC: under New York the next
start lay five hours in the past (a start every pass), under Zurich an hour
late. Two servers, one per zone, run the same job scripts side by side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from netdist.testing import Admin, ServerProcess, start_server, wait_until
from tests.support import counter_script, counter_wheel

FAST = "* * * * * */2"  # croniter's sixth field is seconds: every 2 s (3 starts in about 6 s)
EVERY = 2
STARTING = f"schedule {FAST!r}: starting"
ZONES = ("America/New_York", "Europe/Zurich")


@pytest.fixture
def tz_servers(tmp_path: Path) -> Iterator[dict[str, Admin]]:
    """One real server (SQLite) per zone, each with ``TZ`` set, started and stopped side by side."""

    def start(key: str) -> ServerProcess:
        root = tmp_path / key.replace("/", "-")
        return start_server(root / "data", log_dir=root / "logs", env={"TZ": key}, name=f"server-{root.name}")

    with ThreadPoolExecutor(len(ZONES)) as pool:
        futures = [pool.submit(start, key) for key in ZONES]
        servers = [f.result() for f in futures]
        admins = {key: Admin(server.address) for key, server in zip(ZONES, servers, strict=True)}
        try:
            yield admins
        finally:
            for admin in admins.values():
                admin.close()
            codes = list(pool.map(lambda s: (s.name, s.stop(), s.output()[-3000:]), servers))
    assert all(code == 0 for _, code, _ in codes), codes


def next_start(admin: Admin, hid: str) -> float:
    return admin.handler(hid).next_start_at


def starts_at(admin: Admin, hid: str) -> list[float]:
    return [line.at for line in admin.log(hid) if line.message == STARTING]


def test_a_schedule_starts_at_its_moments_whatever_the_servers_zone(
    tz_servers: dict[str, Admin], tmp_path: Path
) -> None:
    wheel = counter_wheel(tmp_path)
    fast: dict[str, str] = {}
    for key, admin in tz_servers.items():
        admin.upload(wheel)
        # count = 0: each start finishes at once, so every moment of the schedule may start it again.
        fast[key] = admin.add_script(
            counter_script(tmp_path / "fast.py", job="fast", settings=f'schedule = "{FAST}"', count=0)
        ).handler.id
        daily = admin.add_script(counter_script(tmp_path / "daily.py", job="daily", settings='schedule = "0 3 * * *"'))
        kolkata = admin.add_script(
            counter_script(
                tmp_path / "kolkata.py", job="kolkata", settings='schedule = "0 3 * * *"\ntime-zone = "Asia/Kolkata"'
            )
        )
        # Without time-zone, 03:00 in the server's zone; with one, in that zone.
        for hid, zone in ((daily.handler.id, key), (kolkata.handler.id, "Asia/Kolkata")):
            at = wait_until(partial(next_start, admin, hid), 10, what="a daily next start")
            moment = datetime.fromtimestamp(at, ZoneInfo(zone))
            assert (moment.hour, moment.minute) == (3, 0) and 0 < at - time.time() <= 86400, (key, zone, moment)

    for key, admin in tz_servers.items():
        at = wait_until(partial(next_start, admin, fast[key]), 10, what="a next start")
        assert at % EVERY == 0 and -1 < at - time.time() <= EVERY, (key, at - time.time())

    # Three scheduled starts on each server, and every start had a moment of its own.
    wait_until(
        lambda: all(len(starts_at(a, fast[k])) >= 3 for k, a in tz_servers.items()),
        25,
        interval=0.2,
        what="three scheduled starts on each server",
    )
    for key, admin in tz_servers.items():
        seen = starts_at(admin, fast[key])
        # multiples of EVERY seconds in (first - EVERY, last]
        moments = math.floor(seen[-1] / EVERY) - math.floor((seen[0] - EVERY) / EVERY)
        assert len(seen) <= moments, (key, [round(t - seen[0], 2) for t in seen])
