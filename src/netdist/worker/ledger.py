"""The worker's book of leases in flight: what it holds, and what the server has yet to hear.

A lease is *held* from the moment it arrives until its result exists (or it is
revoked or handed back): while its code is fetched, while it waits in the
executor, while it runs. A held lease is *started* once its job began to run;
the server charges an attempt only for those, so each start is *reported*
once per stream (a result implies a start: a lease that finished before its
start was reported is never listed). A result is *unacked* until the server
acknowledges it, and *unsent* until it leaves on the current stream.

After a reconnect (:meth:`Ledger.resend`) every unacked result is unsent
again and every running lease is reported again, so nothing depends on what
an earlier stream managed to carry. On stop or drain, :meth:`Ledger.hand_back`
gives up every held lease that has not started. Results an earlier run of the
worker kept unacknowledged come back with :meth:`Ledger.restore`.

Pure and synchronous: no stream, no event loop, no protobuf. The session
calls it on every event and sends what :meth:`Ledger.flush` returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from netdist.worker.job import JobRef, JobResult


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """What the next flush sends: new results, and starts not yet reported."""

    results: list[JobResult]
    started: list[JobRef]

    def __bool__(self) -> bool:
        return bool(self.results or self.started)


class Ledger:
    """Held, started, unacked and unsent leases, and the transitions between them."""

    def __init__(self) -> None:
        self._held: dict[JobRef, None] = {}
        """In hand without a result: fetching, pending, queued or running (ordered)."""
        self._started: dict[JobRef, None] = {}
        """Held leases whose job began to run."""
        self._unreported: dict[JobRef, None] = {}
        """Started leases not yet reported on this stream."""
        self._unacked: dict[JobRef, JobResult] = {}
        self._unsent: dict[JobRef, None] = {}
        """Unacked results not yet sent on this stream."""

    # -- what the worker holds -------------------------------------------------

    def take(self, ref: JobRef) -> bool:
        """A lease arrived; False if it is already held or answered (a repeat)."""
        if ref in self._held or ref in self._unacked:
            return False
        self._held[ref] = None
        return True

    def start(self, ref: JobRef) -> None:
        """The lease's job began to run (again, after its child died: no change)."""
        if ref in self._held and ref not in self._started:
            self._started[ref] = None
            self._unreported[ref] = None

    def finish(self, result: JobResult) -> bool:
        """The lease has a result; False if it was no longer held (revoked meanwhile)."""
        ref = result.ref
        if ref not in self._held:
            return False
        self._forget(ref)
        self._unacked[ref] = result
        self._unsent[ref] = None
        return True

    def restore(self, results: Iterable[JobResult]) -> int:
        """Results an earlier run left unacknowledged: unacked and unsent again; how many were new."""
        restored = 0
        for result in results:
            ref = result.ref
            if ref not in self._held and ref not in self._unacked:
                self._unacked[ref] = result
                self._unsent[ref] = None
                restored += 1
        return restored

    def revoke(self, ref: JobRef) -> bool:
        """The server took the lease back; True if it was held (then stop its job).

        A result not sent yet is dropped; a sent one waits for its ack as usual.
        """
        if ref in self._held:
            self._forget(ref)
            return True
        if ref in self._unsent:
            del self._unsent[ref]
            del self._unacked[ref]
        return False

    def hand_back(self) -> list[JobRef]:
        """Give up every held lease that has not started; returns them, oldest first."""
        refs = [ref for ref in self._held if ref not in self._started]
        for ref in refs:
            del self._held[ref]
        return refs

    def _forget(self, ref: JobRef) -> None:
        del self._held[ref]
        if ref in self._started:
            del self._started[ref]
            self._unreported.pop(ref, None)

    # -- what the server has yet to hear ----------------------------------------

    def acknowledge(self, ref: JobRef) -> bool:
        """The server is done with this result (stored or dropped); False if unknown."""
        self._unsent.pop(ref, None)
        return self._unacked.pop(ref, None) is not None

    def flush(self) -> Outgoing:
        """Results and starts to send now; from then on they count as sent."""
        results = [self._unacked[ref] for ref in self._unsent]
        started = list(self._unreported)
        self._unsent.clear()
        self._unreported.clear()
        return Outgoing(results=results, started=started)

    def resend(self) -> None:
        """A new stream: every unacked result and every start goes out again."""
        self._unsent = dict.fromkeys(self._unacked)
        self._unreported = dict(self._started)

    # -- views ---------------------------------------------------------------------

    @property
    def held(self) -> list[JobRef]:
        """Every held lease, oldest first."""
        return list(self._held)

    @property
    def claimed(self) -> list[JobRef]:
        """What the Hello names after a reconnect: held leases and those whose result awaits
        its ack. Both are still this worker's; a lease the Hello leaves out, the server takes back
        (and then its result would come back stale)."""
        return [*self._held, *(ref for ref in self._unacked if ref not in self._held)]

    def holds(self, ref: JobRef) -> bool:
        return ref in self._held

    def started(self, ref: JobRef) -> bool:
        return ref in self._started

    @property
    def held_count(self) -> int:
        return len(self._held)

    @property
    def running_count(self) -> int:
        return len(self._started)

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    @property
    def waiting_count(self) -> int:
        """Results and starts waiting for the next flush."""
        return len(self._unsent) + len(self._unreported)

    @property
    def unacked(self) -> list[JobResult]:
        """Every result the server has yet to acknowledge, oldest first."""
        return list(self._unacked.values())

    @property
    def idle(self) -> bool:
        """Nothing held and nothing unacknowledged: a stopping worker may leave."""
        return not self._held and not self._unacked
