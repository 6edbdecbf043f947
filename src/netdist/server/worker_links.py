"""The open stream of each connected worker, and everything the dispatcher sends down them.

A worker has at most one stream: a newer one (a reconnect) replaces and closes
the old, and the old one's end then changes nothing. Protobuf stays in the
servicer: a stream is reached through a :class:`WorkerLink`, which takes the
lease table's own records (:class:`~netdist.server.lease_model.Lease`) and
converts them itself, so no per-job object is built in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from netdist.server.lease_model import HandlerSpec, Lease, Ref, Revocation
from netdist.server.result_acks import ResultAcks


class WorkerLink(Protocol):
    """One worker's stream, as the dispatcher speaks to it."""

    @property
    def closed(self) -> bool: ...
    def send_leases(self, leases: Sequence[Lease], specs: Mapping[str, HandlerSpec]) -> None: ...
    def send_acks(self, acks: ResultAcks) -> None: ...
    def send_revoke(self, refs: Sequence[Ref], reason: str) -> None: ...
    def send_drain(self, reason: str) -> None: ...
    def send_heartbeat_interval(self, seconds: float) -> None: ...
    def close(self, reason: str = "") -> None: ...


class WorkerLinks:
    """Worker id -> its current stream."""

    def __init__(self) -> None:
        self._links: dict[str, WorkerLink] = {}

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._links

    def get(self, worker_id: str) -> WorkerLink | None:
        return self._links.get(worker_id)

    def attach(self, worker_id: str, link: WorkerLink) -> None:
        """The worker's new stream; its old one, if any, is closed."""
        old = self._links.get(worker_id)
        if old is not None:
            old.close()
        self._links[worker_id] = link

    def detach(self, worker_id: str, link: WorkerLink) -> bool:
        """Close ``link``; whether it was the worker's current stream (False: a newer one took over)."""
        link.close()
        if self._links.get(worker_id) is not link:
            return False
        del self._links[worker_id]
        return True

    def drop(self, worker_id: str, reason: str = "") -> bool:
        """Close and forget the worker's stream, telling it ``reason``; whether it had one."""
        link = self._links.pop(worker_id, None)
        if link is None:
            return False
        link.close(reason)
        return True

    def close(self, worker_id: str) -> None:
        """Close the worker's stream (its end, through the servicer, detaches it)."""
        link = self._links.get(worker_id)
        if link is not None:
            link.close()

    def drain_all(self, reason: str) -> None:
        for link in list(self._links.values()):
            link.send_drain(reason)
            link.close()

    def send_leases(self, leases: Iterable[Lease], specs: Mapping[str, HandlerSpec]) -> None:
        """Each worker its leases, in one call per worker."""
        by_worker: dict[str, list[Lease]] = {}
        for lease in leases:
            by_worker.setdefault(lease.worker_id, []).append(lease)
        for worker_id, group in by_worker.items():
            link = self._links.get(worker_id)
            if link is not None:
                link.send_leases(group, specs)

    def revoke(self, revocations: Iterable[Revocation]) -> None:
        for revocation in revocations:
            link = self._links.get(revocation.worker_id)
            if link is not None:
                link.send_revoke(revocation.refs, revocation.reason)
