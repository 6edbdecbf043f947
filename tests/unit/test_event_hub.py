"""The event hub on a real lease table: coalescing, bounded backlogs, the cap, nothing sampled unwatched."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from netdist.errors import ResourceExhaustedError
from netdist.server.event_hub import EventHub, HandlerChange, JobCounts, WorkerChange, WorkerProgress
from netdist.server.leases import LeaseTable
from tests.clock import ManualClock
from tests.lease_tables import table_with_worker


def table_with_jobs(jobs: int) -> LeaseTable:
    return table_with_worker(jobs, slots=4)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())  # type: ignore[arg-type]


def test_counts_of_many_jobs_come_as_one_event_per_sample() -> None:
    async def body() -> None:
        table = table_with_jobs(10)
        hub = EventHub(table, clock=ManualClock(), interval_seconds=3600)
        watcher = hub.subscribe()
        leases = table.pick()
        table.leases_stored(leases, {x.job_id for x in leases})
        hub.tick()
        hub.tick()  # nothing changed since: nothing new
        batch = await watcher.take()
        counts = [i.event for i in batch if isinstance(i.event, JobCounts)]
        progress = [i.event for i in batch if isinstance(i.event, WorkerProgress)]
        assert counts == [JobCounts(handler_id="h", available=6, pending=4, processed=0, failed=0)]
        assert [p.jobs_running for p in progress] == [4]
        assert [j.job_id for j in progress[0].running] == [1, 2, 3, 4]
        await hub.stop()

    run(body)


def test_pushed_events_keep_their_order_and_sampled_ones_take_the_newest_value_in_time_order() -> None:
    async def body() -> None:
        table = table_with_jobs(10)
        clock = ManualClock()
        hub = EventHub(table, clock=clock, interval_seconds=3600)
        watcher = hub.subscribe()
        for _ in range(3):  # three samples while the watcher does not read: one counts event, the newest
            leases = table.pick()
            table.leases_stored(leases, {x.job_id for x in leases})
            hub.sample()
            clock.advance(1)
            table.hand_back("w", [x.ref for x in leases], "test")
        hub.handler_changed(HandlerChange(handler_id="h", change="state", state="paused"))  # counts first
        clock.advance(1)
        hub.handler_changed(HandlerChange(handler_id="h", change="state", state="running"))
        clock.advance(1)
        hub.worker_changed(WorkerChange(worker_id="w", change="disconnected"))  # its progress first
        hub.tick()
        batch = await watcher.take()
        kinds = [type(i.event).__name__ for i in batch]
        # The counts and the progress sampled last replaced the pending ones and went last, as new ones
        # would: a replaced event kept in its old place came before older ones (a watch test saw it).
        assert kinds == ["JobCounts", "HandlerChange", "HandlerChange", "WorkerProgress", "WorkerChange"]
        assert [i.at for i in batch] == sorted(i.at for i in batch)
        assert [p.event.jobs_running for p in batch if isinstance(p.event, WorkerProgress)] == [0]
        await hub.stop()

    run(body)


def test_a_watcher_that_falls_too_far_behind_is_cut_off_and_others_go_on() -> None:
    async def body() -> None:
        hub = EventHub(table_with_jobs(0), clock=ManualClock(), interval_seconds=3600, max_backlog=5)
        stalled, reader = hub.subscribe(), hub.subscribe()
        for i in range(6):
            hub.handler_changed(HandlerChange(handler_id="h", change="state", state=f"s{i}"))
            if i % 2:
                hub.tick()
                assert len(await reader.take()) == 2
        assert stalled.overflowed and len(stalled) == 0
        assert await stalled.take() == []
        assert not reader.overflowed
        await hub.stop()

    run(body)


def test_more_watchers_than_the_cap_are_refused_and_a_freed_place_is_taken_again() -> None:
    async def body() -> None:
        hub = EventHub(table_with_jobs(0), clock=ManualClock(), interval_seconds=3600, max_watchers=2)
        first = hub.subscribe()
        hub.subscribe()
        with pytest.raises(ResourceExhaustedError, match="already serves 2 watch streams"):
            hub.subscribe()
        hub.unsubscribe(first)
        hub.subscribe()
        await hub.stop()

    run(body)


def test_the_interval_grows_with_the_watchers_to_bound_what_all_of_them_are_sent() -> None:
    async def body() -> None:
        hub = EventHub(table_with_jobs(0), clock=ManualClock(), interval_seconds=0.05, max_sends_per_second=200)
        for _ in range(10):
            hub.subscribe()
        assert hub.interval_seconds == 0.05
        for _ in range(190):
            hub.subscribe()
        assert hub.interval_seconds == 1.0
        await hub.stop()

    run(body)


def test_nothing_is_kept_while_no_one_watches() -> None:
    async def body() -> None:
        table = table_with_jobs(3)
        hub = EventHub(table, clock=ManualClock(), interval_seconds=3600)
        hub.handler_changed(HandlerChange(handler_id="h", change="state", state="running"))
        hub.worker_changed(WorkerChange(worker_id="w", change="connected"))
        leases = table.pick()
        table.leases_stored(leases, {x.job_id for x in leases})
        watcher = hub.subscribe()  # what is now is the snapshot's: no event for it
        hub.tick()
        assert len(watcher) == 0
        await hub.stop()

    run(body)
