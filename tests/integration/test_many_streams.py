"""Thousands of workers connecting at once all get their streams.

gRPC core queues the calls the server has not accepted yet and, with its
defaults, cancels new ones past 1,000 waiting and every one past 3,000: after a
server restart most of a large fleet's streams failed, and each worker had to
back off and try again (bench/idle_streams.py welcomed about 3,500 of 10,000 in
two minutes). The server now lets 20,000 wait (``app.MAX_PENDING_CALLS``).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc
from netdist.testing import known_token, wait_until
from tests.integration.conftest import Cluster

STREAMS = 4000
CHANNELS = 10


async def _connect_all(address: str, token: str) -> tuple[int, list[str]]:
    """Open every stream at once, each a Hello; count the Welcomes, then end them all."""
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CHANNELS)
    ]
    stubs = [jobs_pb2_grpc.JobServiceStub(ch) for ch in channels]
    calls = [stubs[n % CHANNELS].Connect(metadata=(("authorization", f"Bearer {token}"),)) for n in range(STREAMS)]

    async def hello(n: int, call: grpc.aio.StreamStreamCall) -> str:
        name = f"crowd-{n:05d}"
        try:
            await call.write(jobs_pb2.WorkerMessage(hello=jobs_pb2.Hello(worker_id=name, name=name, slots=1)))
            first = await asyncio.wait_for(call.read(), 120)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return "" if first is not grpc.aio.EOF and first.HasField("welcome") else f"no Welcome: {first}"

    try:
        outcomes = await asyncio.gather(*(hello(n, call) for n, call in enumerate(calls)))
    finally:
        for call in calls:
            call.cancel()
        for ch in channels:
            await ch.close()
    failed = [o for o in outcomes if o]
    return len(outcomes) - len(failed), failed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_four_thousand_workers_connecting_at_once_are_all_welcomed(cluster: Cluster) -> None:
    address = cluster.process.address
    token = known_token(address, "worker")
    assert token is not None
    welcomed, failed = asyncio.run(_connect_all(address, token))
    assert welcomed == STREAMS, f"{len(failed)} streams failed, e.g. {sorted(set(failed))[:3]}"
    # And the server lets go of every one of them: the clients cancelled their streams (a loaded
    # server notices some only as silent, after three heartbeat intervals). Waited for here, not
    # left to the teardown's SIGTERM: once, in CI, the server had not stopped 15 s after it.
    wait_until(
        lambda: not any(w.connected for w in cluster.api.workers()),
        60,
        what="the server to see all 4,000 streams end",
    )
