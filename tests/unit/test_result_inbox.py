"""Results handed to the handler from memory reach it exactly once, whatever the order (result_inbox.py).

A model of the store (jobs succeeded or processed), the writer's numbering, a
dispatcher that puts a result write's batch into the inbox any time after it
committed, and a runtime that takes from the inbox or reads the store, one
step at a time, and restarts.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from netdist.server.host_protocol import StoredResult
from netdist.server.result_inbox import ResultInbox

H = "h"
LIMIT = 3  # results per handler call


def item(job_id: int, size: int = 0) -> StoredResult:
    return StoredResult(job_id, "{}", "x" * size, "null")


def counted() -> asyncio.Future[None]:
    """A write's answer (never awaited here: the model's writes are committed when put)."""
    return asyncio.Future(loop=_LOOP)


_LOOP = asyncio.new_event_loop()
_LOOP.close()  # the futures are only compared: nothing runs on it


class InboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.inbox = ResultInbox(max_per_handler=4, max_bytes=2000)
        self.seq = 0
        self.next_job = 1
        self.succeeded: set[int] = set()  # in the store, not processed yet
        self.on_the_way: list[tuple[int, list[StoredResult]]] = []  # committed, not put in the inbox yet
        self.delivered: Counter[int] = Counter()
        self.must_read = True  # a runtime starts with a read of the store

    def _draw_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _deliver(self, ids: list[int]) -> None:
        self.delivered.update(ids)
        self.succeeded -= set(ids)  # its batch is committed processed before the runtime's next step

    @rule(n=st.integers(1, 4), size=st.sampled_from([0, 0, 900]))
    def results_committed(self, n: int, size: int) -> None:
        ids = list(range(self.next_job, self.next_job + n))
        self.next_job += n
        self.succeeded |= set(ids)
        self.on_the_way.append((self._draw_seq(), [item(i, size) for i in ids]))

    @precondition(lambda self: self.on_the_way)
    @rule(data=st.data())
    def dispatcher_puts(self, data: st.DataObject) -> None:
        seq, items = self.on_the_way.pop(data.draw(st.integers(0, len(self.on_the_way) - 1)))
        self.inbox.put(H, seq, items, counted())

    @rule(look=st.booleans())
    def runtime_step(self, look: bool) -> None:
        look = look or self.must_read
        self.must_read = False
        if not look and (taken := self.inbox.take(H, LIMIT).items):
            self._deliver([t.job_id for t in taken])
            return
        seq = self._draw_seq()
        self.inbox.read_store(H, seq)
        self._deliver(sorted(self.succeeded)[:LIMIT])

    @rule()
    def runtime_restarts(self) -> None:
        self.inbox.forget(H)
        self.must_read = True

    @invariant()
    def never_twice(self) -> None:
        assert all(n == 1 for n in self.delivered.values()), self.delivered
        assert self.inbox.nbytes <= 2000 and len(self.inbox) <= 4

    def teardown(self) -> None:
        while self.on_the_way:
            self.dispatcher_puts_all()
        for _ in range(self.next_job):
            self.runtime_step(look=False)
        assert set(self.delivered) == set(range(1, self.next_job)), "every result reached the handler"
        assert all(n == 1 for n in self.delivered.values())
        assert len(self.inbox) == 0 and self.inbox.nbytes == 0

    def dispatcher_puts_all(self) -> None:
        seq, items = self.on_the_way.pop()
        self.inbox.put(H, seq, items, counted())


InboxMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_results_reach_the_handler_exactly_once = InboxMachine.TestCase


def test_a_late_batch_older_than_a_read_of_the_store_is_refused() -> None:
    inbox = ResultInbox()
    inbox.read_store(H, 5)
    inbox.put(H, 4, [item(1)], counted())  # committed before the read, so that read handed it over
    later = counted()
    inbox.put(H, 6, [item(2)], later)
    taken = inbox.take(H, 10)
    assert [r.job_id for r in taken.items] == [2] and taken.stored == [later]
    inbox.forget(H)
    inbox.put(H, 3, [item(3)], counted())  # still refused after the runtime ended
    assert inbox.take(H, 10).items == []
