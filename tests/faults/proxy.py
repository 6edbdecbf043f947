"""A TCP proxy on loopback for the fault tests: the network between a worker (or
an admin client) and the server, made to fail on cue.

It runs an asyncio loop in a thread of its own; every control method is
synchronous (it returns once the loop has done it) and safe from the test's
thread. Modes:

- pass: forward everything (the default);
- blackhole: keep every socket open and forward nothing, in both directions,
  on old and new connections alike (what a dead route looks like);
- cut: ``cut_all()`` resets every open connection now; ``cut_after(n, "up")``
  forwards ``n`` more bytes client-to-server (``"down"``: server-to-client),
  the last chunk only partly, then resets every connection: the way to cut in
  the middle of a download, a result or an upload. Connections made after a
  cut pass again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import socket
import struct
import termios
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

Direction = Literal["up", "down"]
T = TypeVar("T")
_READ = 64 * 1024


@dataclasses.dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter

    def reset(self) -> None:
        for writer in (self.client, self.server):
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a broken network or a dead peer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _sent(writer: asyncio.StreamWriter, timeout: float = 2.0) -> None:
    """Wait until the kernel has no unsent bytes of this socket (a reset would drop them)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return
        if unsent == 0:
            return
        await asyncio.sleep(0.002)


class Proxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``upstream`` (``host:port``)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.address = ""
        self.bytes_up = 0  # forwarded client -> server, over all connections
        self.bytes_down = 0
        self.connections = 0  # accepted so far
        self.cuts = 0  # how many times connections were cut
        self._blackhole = False
        self._budget: dict[Direction, int] = {}  # an armed cut_after
        self._open: set[_Connection] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    # -- control, from the test's thread ----------------------------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def retarget(self, upstream: str) -> None:
        """New connections go to ``upstream`` (a restarted server); open ones stay as they are."""
        self.upstream = upstream

    def pass_through(self) -> None:
        self._call(self._set(blackhole=False))

    def blackhole(self) -> None:
        self._call(self._set(blackhole=True))

    def cut_all(self) -> int:
        """Reset every open connection now; returns how many there were."""
        return self._call(self._cut())

    def cut_after(self, nbytes: int, direction: Direction) -> None:
        """Forward ``nbytes`` more bytes in ``direction``, then reset every connection (once)."""
        self._call(self._arm(nbytes, direction))

    @property
    def armed(self) -> bool:
        return bool(self._budget)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- the loop --------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut(count=False)

    async def _set(self, *, blackhole: bool) -> None:
        self._blackhole = blackhole

    async def _arm(self, nbytes: int, direction: Direction) -> None:
        self._budget = {direction: nbytes}

    async def _cut(self, *, count: bool = True) -> int:
        conns = list(self._open)
        self._open.clear()
        for conn in conns:
            conn.reset()
        self._budget = {}
        if count:
            self.cuts += 1
        return len(conns)

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        self.connections += 1
        host, _, port = self.upstream.rpartition(":")
        try:
            server_reader, server = await asyncio.open_connection(host, int(port))
        except OSError:
            _reset(client)  # as a refused connection looks through a proxy
            return
        conn = _Connection(client=client, server=server)
        self._open.add(conn)
        try:
            await asyncio.gather(self._pump(client_reader, conn, "up"), self._pump(server_reader, conn, "down"))
        finally:
            self._open.discard(conn)
            for writer in (client, server):
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, conn: _Connection, direction: Direction) -> None:
        writer = conn.server if direction == "up" else conn.client
        try:
            while data := await reader.read(_READ):
                if conn not in self._open:
                    return  # cut meanwhile
                if self._blackhole:
                    continue
                cut = False
                budget = self._budget.get(direction)
                if budget is not None:
                    data, cut = data[:budget], len(data) >= budget
                    self._budget[direction] = budget - len(data)
                if data:
                    if direction == "up":
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    writer.write(data)
                if cut:
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    await _sent(writer)  # the bytes up to the cut reach the peer before the reset
                    await self._cut()
                    return
                await writer.drain()
            if conn in self._open and not self._blackhole:
                with contextlib.suppress(OSError):
                    writer.write_eof()  # a clean half-close passes on
        except (ConnectionError, OSError):
            await self._drop(conn)

    async def _drop(self, conn: _Connection) -> None:
        """One side broke: break the other too."""
        if conn in self._open:
            self._open.discard(conn)
            conn.reset()
