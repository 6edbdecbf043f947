"""Hold N idle worker streams on a netdist server: the light client of bench/idle_streams.py.

    .venv/bin/python bench/idle_holder.py ADDRESS TOKEN_FILE --streams N [--channels 100]

Each stream is ``JobService.Connect`` as a worker opens it: a Hello (worker ``idle-<i>``, 1 slot), a Capacity
of 1 (it holds credit), then a Heartbeat at the interval the server's Welcome gives and its StreamSettings
messages change, as a real worker does (``--heartbeat``: every so many seconds instead; the server drops a
stream silent for three of the intervals it gave). The streams are spread over ``--channels`` gRPC channels (connections). It
prints ``welcomed <n>`` as the Welcomes come (every 500 and at the end), then holds the streams until stdin
closes or SIGTERM, and prints ``ended <n> <errors>``. Leases it is sent are never started (the bench's
handler allows only the real workers, so none should come).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import grpc

from netdist.api.v1 import jobs_pb2, jobs_pb2_grpc


async def hold(
    stub: jobs_pb2_grpc.JobServiceStub,
    token: str,
    n: int,
    heartbeat: float | None,
    welcomed: list[int],
    errors: list[str],
) -> None:
    call = stub.Connect(metadata=(("authorization", f"Bearer {token}"),))
    hello = jobs_pb2.Hello(worker_id=f"idle-{n:05d}", name=f"idle-{n:05d}", slots=1, version="bench", hostname="bench")
    await call.write(jobs_pb2.WorkerMessage(hello=hello))
    await call.write(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=1)))
    reader = asyncio.ensure_future(call.read())
    try:
        first = await reader
        if first is grpc.aio.EOF or not first.HasField("welcome"):
            errors.append(f"stream {n}: no Welcome")
            return
        welcomed[0] += 1
        if welcomed[0] % 500 == 0:
            print(f"welcomed {welcomed[0]}", flush=True)
        interval = heartbeat or first.welcome.heartbeat_interval_seconds
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        reader = asyncio.ensure_future(call.read())
        while True:
            done, _ = await asyncio.wait({reader}, timeout=max(0.0, due - loop.time()))
            if done:
                message = reader.result()
                if message is grpc.aio.EOF:
                    errors.append(f"stream {n}: ended by the server")
                    return
                if message.HasField("settings") and heartbeat is None:
                    due += message.settings.heartbeat_interval_seconds - interval
                    interval = message.settings.heartbeat_interval_seconds
                reader = asyncio.ensure_future(call.read())  # leases or acks: read, never acted on
                continue
            await call.write(jobs_pb2.WorkerMessage(heartbeat=jobs_pb2.Heartbeat()))
            due = loop.time() + interval
    except grpc.aio.AioRpcError as exc:
        errors.append(f"stream {n}: {exc.code().name}")
    finally:
        reader.cancel()
        call.cancel()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address")
    p.add_argument("token_file")
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--heartbeat", type=float, default=None, help="seconds (default: as the server says)")
    args = p.parse_args()
    token = Path(args.token_file).read_text().strip()  # noqa: ASYNC240  # once, before any stream
    # A local subchannel pool each: otherwise gRPC shares one connection among equal channels, and one
    # connection carries only so many streams at once (here about 2,500: the rest waited).
    channels = [
        grpc.aio.insecure_channel(args.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    stubs = [jobs_pb2_grpc.JobServiceStub(ch) for ch in channels]
    welcomed: list[int] = [0]
    errors: list[str] = []
    tasks = [
        asyncio.ensure_future(hold(stubs[n % len(stubs)], token, n, args.heartbeat, welcomed, errors))
        for n in range(args.streams)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 1):  # b"" once the bench closes it: stop
            stop.set()

    loop.add_reader(stdin, on_stdin)
    while welcomed[0] + len(errors) < args.streams and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    print(f"welcomed {welcomed[0]}", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"ended {welcomed[0]} {len(errors)} {errors[:3]}", flush=True)
    for ch in channels:
        await ch.close()


if __name__ == "__main__":
    asyncio.run(main())
