"""The worker's ledger of leases in flight, driven through its transitions without a stream."""

from __future__ import annotations

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
    assert not ledger.take(A)  # answered already
    assert ledger.unacked_count == 1
    assert not ledger.idle
    assert ledger.flush().results == [done(A)]
    assert ledger.acknowledge(A)
    assert not ledger.acknowledge(A)
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
    assert not ledger.finish(
        done(A)
    )  # its job was killed; a late result does not count
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
