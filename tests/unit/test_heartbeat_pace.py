"""The heartbeat interval stretched with the number of streams, the silence each worker is given, and what
a worker takes from a server.

Seen from outside (bench/idle_streams.py): 10,000 idle streams heartbeating every 4 s sent the server 2,500
messages a second, and two real workers beside them ran at 0.84 of their rate alone (0.99 with the
streams heartbeating every 40 s).
"""

from __future__ import annotations

import pytest

from netdist.server.heartbeat_pace import SILENT_INTERVALS, HeartbeatPace
from netdist.server.lease_model import WorkerInfo
from netdist.server.leases import LeaseTable
from netdist.worker.connection import MAX_HEARTBEAT_SECONDS, server_heartbeat_seconds
from tests.clock import ManualClock


def test_the_interval_keeps_every_streams_heartbeats_under_the_rate() -> None:
    pace = HeartbeatPace(5.0, 500.0)
    assert pace.interval(1) == 5.0
    assert pace.interval(2500) == 5.0  # 500 a second at the configured interval
    assert pace.interval(10_000) == 20.0
    assert 10_000 / pace.interval(10_000) <= 500.0


def test_the_open_streams_hear_a_new_interval_once_it_doubled() -> None:
    pace = HeartbeatPace(1.0, 10.0)
    told = [pace.joined(n) for n in range(1, 41)]
    assert told[9] == (1.0, None)  # 10 streams: the configured interval
    assert told[10] == (1.1, None)  # a newcomer is told its own; the others keep theirs
    broadcasts = [(n, everyone) for n, (_, everyone) in enumerate(told, start=1) if everyone is not None]
    assert broadcasts == [(20, 2.0), (40, 4.0)]  # each round takes as many streams again
    # Streams leave: a newcomer gets the shorter interval, and the next round is counted from it.
    assert pace.joined(12) == (1.2, None)
    assert pace.joined(24) == (2.4, 2.4)


@pytest.mark.parametrize(("base", "rate"), [(0.0, 10.0), (1.0, 0.0), (float("nan"), 1.0)])
def test_a_pace_needs_a_positive_interval_and_rate(base: float, rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        HeartbeatPace(base, rate)


def test_each_worker_is_dropped_after_its_own_silence() -> None:
    clock = ManualClock()
    table = LeaseTable(clock=clock, reconnect_grace_seconds=2.0, silent_after_seconds=3.0)
    for name in ("short", "long"):
        table.connect(WorkerInfo(worker_id=name, name=name, labels={}, slots=1), [])
    table.set_silent_after("long", 4.0 * SILENT_INTERVALS)
    assert table.silent_after_below(12.0) == ["short"]
    clock.advance(3.5)
    assert table.tick().silent == ["short"]
    assert table.workers["long"].connected
    clock.advance(8.0)  # 11.5 s silent
    assert table.tick().silent == []
    clock.advance(1.0)
    assert table.tick().silent == ["long"]
    assert table.silent_after_below(100.0) == []  # neither is connected now


@pytest.mark.parametrize(
    ("sent", "taken"),
    [(20.0, 20.0), (0.0, None), (-1.0, None), (float("nan"), None), (float("inf"), None), (1e9, MAX_HEARTBEAT_SECONDS)],
)
def test_a_worker_takes_only_a_positive_interval_and_caps_it(sent: float, taken: float | None) -> None:
    assert server_heartbeat_seconds(sent) == taken
