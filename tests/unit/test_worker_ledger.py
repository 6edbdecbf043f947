"""The worker's ledger of leases in flight, driven through its transitions without a stream."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from netdist.worker.job import JobRef, JobResult
from netdist.worker.ledger import Ledger

A, B, C, D = (JobRef(job_id=n, lease_no=1) for n in range(1, 5))


def done(ref: JobRef) -> JobResult:
    return JobResult(ref=ref, output_json=b"1", duration_seconds=0.01)


def test_a_lease_is_held_until_its_result_then_unacked_until_the_ack() -> None:
    ledger = Ledger()
    assert ledger.take(A)
    assert not ledger.take(A)  # a repeat of the same lease
    assert ledger.held == [A]
    assert not ledger.idle
    assert ledger.finish(done(A))
    assert ledger.held == []
    assert ledger.claimed == [A]  # a reconnect's Hello still names it: its result is on the way
    assert not ledger.take(A)  # answered already
    assert ledger.unacked_count == 1
    assert not ledger.idle
    assert ledger.flush().results == [done(A)]
    assert ledger.acknowledge(A)
    assert not ledger.acknowledge(A)
    assert ledger.claimed == []
    assert ledger.idle


def test_a_start_is_reported_once_unless_the_result_goes_with_it() -> None:
    ledger = Ledger()
    for ref in (A, B, C):
        ledger.take(ref)
    ledger.start(A)
    ledger.start(B)
    ledger.start(B)  # again (its child died and it was placed anew): no change
    ledger.finish(done(B))
    out = ledger.flush()
    assert out.started == [A]  # B's result implies its start
    assert out.results == [done(B)]
    assert not ledger.flush()  # nothing new
    ledger.start(C)
    assert ledger.waiting_count == 1
    assert ledger.flush().started == [C]
    assert ledger.running_count == 2


def test_a_start_for_a_lease_not_held_is_ignored() -> None:
    ledger = Ledger()
    ledger.start(A)
    assert not ledger.flush()
    assert not ledger.started(A)


def test_a_reconnect_resends_unacked_results_and_running_starts() -> None:
    ledger = Ledger()
    for ref in (A, B, C, D):
        ledger.take(ref)
    ledger.start(A)
    ledger.start(B)
    ledger.finish(done(C))
    first = ledger.flush()
    assert (first.started, first.results) == ([A, B], [done(C)])
    ledger.finish(done(B))  # finished while the stream was down: not flushed
    ledger.resend()  # a new stream was welcomed
    again = ledger.flush()
    assert again.started == [A]  # B has a result now, D never started
    assert again.results == [done(C), done(B)]
    assert ledger.held == [A, D]


def test_an_acked_result_is_not_resent() -> None:
    ledger = Ledger()
    ledger.take(A)
    ledger.finish(done(A))
    ledger.acknowledge(A)  # acked before it was even flushed (a duplicate answer)
    ledger.resend()
    assert not ledger.flush()


def test_hand_back_gives_up_exactly_the_unstarted_leases() -> None:
    ledger = Ledger()
    for ref in (A, B, C, D):
        ledger.take(ref)
    ledger.start(B)
    ledger.finish(done(D))
    assert ledger.hand_back() == [A, C]
    assert ledger.held == [B]
    assert ledger.hand_back() == []
    assert not ledger.finish(done(A))  # a late result of a handed back lease is dropped
    assert ledger.flush().results == [done(D)]


def test_revoke_stops_a_held_lease_and_drops_an_unsent_result() -> None:
    ledger = Ledger()
    for ref in (A, B, C):
        ledger.take(ref)
    ledger.start(A)
    assert ledger.revoke(A)
    assert not ledger.finish(done(A))  # its job was killed; a late result does not count
    ledger.finish(done(B))
    assert not ledger.revoke(B)  # not held any more: nothing to stop
    ledger.finish(done(C))
    assert ledger.flush().results == [done(C)]  # B was dropped unsent, A never reported
    assert not ledger.revoke(C)  # sent: it stays until the server acks it
    assert ledger.unacked_count == 1
    assert ledger.acknowledge(C)
    assert ledger.idle


def test_revoke_of_an_unknown_lease_changes_nothing() -> None:
    ledger = Ledger()
    ledger.take(A)
    assert not ledger.revoke(B)
    assert ledger.held == [A]


class LedgerMachine(RuleBasedStateMachine):
    """Any order of leases, starts, results, revokes, acks, flushes and reconnects.

    Checked against what one stream has carried: a start is reported at most
    once per stream and never after the job's result went out, a hand-back
    never names a started lease, and after a reconnect the first flush carries
    every unacked result and every running lease.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.next_id = 0
        self.held: set[JobRef] = set()
        self.started: set[JobRef] = set()
        self.unacked: set[JobRef] = set()
        self.sent: set[JobRef] = set()  # results sent on this stream
        self.reported: set[JobRef] = set()  # starts reported on this stream

    @rule()
    def take(self) -> None:
        self.next_id += 1
        ref = JobRef(self.next_id, 1)
        assert self.ledger.take(ref)
        self.held.add(ref)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.held)))
        self.ledger.start(ref)
        self.started.add(ref)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.held)))
        assert self.ledger.finish(done(ref))
        self.held.discard(ref)
        self.started.discard(ref)
        self.unacked.add(ref)

    @precondition(lambda self: self.held or self.unacked)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.held | self.unacked)))
        was_held = ref in self.held
        assert self.ledger.revoke(ref) == was_held
        self.held.discard(ref)
        self.started.discard(ref)
        if not was_held and ref not in self.sent:
            self.unacked.discard(ref)  # dropped before it went out

    @precondition(lambda self: self.sent & self.unacked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.sent & self.unacked)))
        assert self.ledger.acknowledge(ref)
        self.unacked.discard(ref)

    @rule()
    def flush(self) -> None:
        out = self.ledger.flush()
        results = {r.ref for r in out.results}
        assert len(results) == len(out.results)
        assert results <= self.unacked
        assert not results & self.sent
        assert set(out.started) <= self.started
        assert not set(out.started) & self.reported
        self.sent |= results
        self.reported |= set(out.started)

    @rule()
    def reconnect(self) -> None:
        self.ledger.resend()
        self.sent, self.reported = set(), set()
        out = self.ledger.flush()
        assert {r.ref for r in out.results} == self.unacked
        assert set(out.started) == self.started
        self.sent, self.reported = set(self.unacked), set(self.started)

    @rule()
    def hand_back(self) -> None:
        refs = set(self.ledger.hand_back())
        assert refs == self.held - self.started
        self.held -= refs

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert set(self.ledger.held) == self.held
        assert self.ledger.unacked_count == len(self.unacked)
        assert self.ledger.running_count == len(self.started)
        assert self.started <= self.held
        assert not self.held & self.unacked
        assert self.ledger.idle == (not self.held and not self.unacked)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
