"""The fault proxy itself, against a plain echo server: each mode does what it says."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from netdist.testing import wait_until
from tests.faults.proxy import Proxy

received: list[int] = []  # bytes the server got, per connection that ended


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets are what these tests make


class _Echo(socketserver.BaseRequestHandler):
    """Echoes; a first message of b"SEND" asks for 200,000 bytes instead."""

    def handle(self) -> None:
        total = 0
        try:
            while data := self.request.recv(65536):
                total += len(data)
                self.request.sendall(b"z" * 200_000 if data == b"SEND" else data)
        finally:
            received.append(total)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    received.clear()
    server = _Server(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = Proxy(f"127.0.0.1:{server.server_address[1]}").start()
    yield p
    p.close()
    server.shutdown()
    server.server_close()


def connect(proxy: Proxy) -> socket.socket:
    host, port = proxy.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_pass_through_forwards_both_ways(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"x" * 100_000)
        assert recv_exactly(sock, 100_000) == b"x" * 100_000
    assert proxy.bytes_up == proxy.bytes_down == 100_000


def test_blackhole_keeps_the_socket_open_and_forwards_nothing(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        proxy.blackhole()
        sock.sendall(b"lost")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)  # nothing comes back, and the socket is not closed either
        assert proxy.open_connections == 1
        proxy.pass_through()
        sock.settimeout(5)
        sock.sendall(b"after")
        assert recv_exactly(sock, 5) == b"after"
    assert proxy.bytes_up == 5


def test_cut_all_resets_open_connections_and_new_ones_pass(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"hi")
        assert recv_exactly(sock, 2) == b"hi"
        assert proxy.cut_all() == 1

        def keep_talking() -> None:
            for _ in range(100):  # the reset shows on a read or on a later write
                sock.sendall(b"more")
                if not sock.recv(10):
                    raise ConnectionResetError("closed")

        with pytest.raises((ConnectionError, OSError)):
            keep_talking()
    with connect(proxy) as sock:
        sock.sendall(b"again")
        assert recv_exactly(sock, 5) == b"again"
    assert proxy.cuts == 1 and proxy.connections == 2


def drain(sock: socket.socket) -> int:
    """Bytes read until the connection ends (a reset may drop some that were in flight)."""
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionError:
        pass
    return total


def test_cut_after_n_bytes_up_delivers_exactly_n_then_cuts(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        proxy.cut_after(70_000, "up")
        sock.sendall(b"y" * 200_000)
        drain(sock)
    wait_until(lambda: received, 5, what="the server to see the cut")
    # The proxy wrote exactly 70,000 bytes; the reset that follows drops what the server had not read
    # yet (once in CI it had read 65,536), so the server counts at most that many, never more.
    assert proxy.bytes_up == 70_000 and len(received) == 1 and 0 < received[0] <= 70_000
    assert proxy.cuts == 1 and not proxy.armed and proxy.open_connections == 0


def test_cut_after_n_bytes_down_forwards_exactly_n_then_cuts(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        proxy.cut_after(70_000, "down")
        sock.sendall(b"SEND")
        assert drain(sock) <= 70_000
    assert proxy.bytes_down == 70_000
    wait_until(lambda: proxy.cuts == 1, 5, what="the cut")
    with connect(proxy) as sock:  # disarmed: the next connection passes
        sock.sendall(b"ok")
        assert recv_exactly(sock, 2) == b"ok"
