"""Liveness of WebSocket connections: what a session's end releases.

Against a real server process, a raw client opens a WebSocket, joins the
Socket.IO namespace ``/`` and then goes silent while staying connected at
TCP level (it never reads nor answers a ping). When Engine.IO gives up on
it, or closes its session for another reason, the server must release the
connection's file descriptors and greenlets at once, not when the kernel
gives up on the TCP connection. The file descriptors of the server process
are counted in ``/proc``.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import socketio
from socketio_testing import recv_exactly

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc"),
]

#: Engine.IO timings of the servers of these tests, in seconds.
PING_INTERVAL = 1.0
PING_TIMEOUT = 1.0

#: Seconds within which a silent client must have been let go: a ping
#: interval, a ping timeout, and a margin for a loaded machine.
RELEASE_TIMEOUT = PING_INTERVAL + PING_TIMEOUT + 10


def fd_count(pid: int) -> int:
    """Number of open file descriptors of process *pid*."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def health(url: str) -> dict:
    answer = requests.get(f"{url}/health", headers={"Connection": "close"}, timeout=5)
    answer.raise_for_status()
    result: dict = answer.json()
    return result


def text_frame(text: str) -> bytes:
    """A masked WebSocket text frame, as a client sends it (< 126 bytes)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def read_frame(sock: socket.socket) -> str:
    """Read one unmasked text frame sent by the server (< 126 bytes)."""
    header = recv_exactly(sock, 2)
    assert header[0] == 0x81, header
    return recv_exactly(sock, header[1] & 0x7F).decode()


def open_silent_client(url: str) -> socket.socket:
    """Open a Socket.IO connection to ``/`` over a raw WebSocket.

    Returns the socket once the namespace is joined; the caller then never
    reads from it nor writes to it, until it closes it.
    """
    host, port = re.fullmatch(r"http://([^:]+):(\d+)", url).groups()
    sock = socket.create_connection((host, int(port)), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, response
        response += chunk
    assert response.startswith(b"HTTP/1.1 101 "), response
    assert read_frame(sock).startswith("0{")  # Engine.IO open
    sock.sendall(text_frame("40"))  # Socket.IO connect to /
    assert read_frame(sock).startswith("40{")
    return sock


@pytest.fixture
def liveness_server(tmp_path, spawn_server) -> Callable[..., Any]:
    """Start a server, by default with short Engine.IO ping interval and
    timeout."""

    def spawn(
        ping_interval: float = PING_INTERVAL, ping_timeout: float = PING_TIMEOUT
    ) -> Any:
        config = tmp_path / "oe.cfg"
        config.write_text(
            "[oe_web_socketio]\n"
            f"ping_interval = {ping_interval}\nping_timeout = {ping_timeout}\n"
        )
        return spawn_server("-c", str(config))

    return spawn


@pytest.fixture
def silent_clients() -> Iterator[list[socket.socket]]:
    """Sockets of silent clients, closed in teardown."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


class Released:
    """Probe: no client, no greenlet and no file descriptor above
    *baseline*; its ``repr`` tells the last counts seen."""

    def __init__(self, url: str, pid: int, baseline: int) -> None:
        self.url, self.pid, self.baseline = url, pid, baseline
        self.seen: dict[str, int] = {}

    def __call__(self) -> bool:
        answer = health(self.url)
        self.seen = {
            "clients": answer["clients"],
            "greenlets": answer["greenlets"],
            "extra fds": fd_count(self.pid) - self.baseline,
        }
        return not any(self.seen.values())

    def __repr__(self) -> str:
        return f"<released? last seen {self.seen}>"


def test_silent_client_is_released_after_the_ping_timeout(
    liveness_server, silent_clients, wait_until
):
    server = liveness_server()
    baseline = fd_count(server.pid)
    sock = open_silent_client(server.url)
    silent_clients.append(sock)
    assert health(server.url)["clients"] == 1
    # The accepted socket, and no duplicate of it.
    wait_until(lambda: fd_count(server.pid) == baseline + 1)
    wait_until(Released(server.url, server.pid, baseline), timeout=RELEASE_TIMEOUT)
    # The server ended the TCP connection too: the client reads to its end
    # (the Engine.IO ping, maybe a close frame) instead of waiting forever.
    sock.settimeout(5)
    while sock.recv(65536):
        pass


def test_client_that_closes_tcp_is_released(liveness_server, wait_until):
    server = liveness_server()
    baseline = fd_count(server.pid)
    sock = open_silent_client(server.url)
    sock.close()
    wait_until(Released(server.url, server.pid, baseline), timeout=RELEASE_TIMEOUT)


def test_client_disconnect_leaves_no_file_descriptor(liveness_server, wait_until):
    server = liveness_server()
    baseline = fd_count(server.pid)
    client = socketio.Client(reconnection=False)
    try:
        client.connect(server.url, transports=["websocket"], wait_timeout=10)
        assert health(server.url)["clients"] == 1
    finally:
        client.disconnect()
    wait_until(Released(server.url, server.pid, baseline), timeout=RELEASE_TIMEOUT)


def test_upgraded_client_disconnect_leaves_no_file_descriptor(
    liveness_server, wait_until
):
    server = liveness_server()
    baseline = fd_count(server.pid)
    client = socketio.Client(reconnection=False)
    try:
        client.connect(server.url, transports=["polling", "websocket"])
        wait_until(lambda: client.transport() == "websocket")
    finally:
        client.disconnect()
    wait_until(Released(server.url, server.pid, baseline), timeout=RELEASE_TIMEOUT)


def test_garbage_releases_the_connection_at_once(liveness_server, wait_until):
    """A frame python-engineio cannot decode ends the session, its
    greenlets and both file descriptors at once, not at the ping timeout
    (here a minute away): the client reads a close frame, then the end."""
    server = liveness_server(ping_interval=60, ping_timeout=60)
    baseline = fd_count(server.pid)
    sock = open_silent_client(server.url)
    try:
        assert health(server.url)["clients"] == 1
        sock.sendall(text_frame(";x"))
        assert read_frame(sock) == "1"  # Engine.IO close
        header = recv_exactly(sock, 2)
        assert header[0] == 0x88  # the close frame
        code = int.from_bytes(recv_exactly(sock, header[1] & 0x7F)[:2], "big")
        assert code == 1002
        assert sock.recv(65536) == b""
    finally:
        sock.close()
    wait_until(Released(server.url, server.pid, baseline), timeout=5)


def test_shutdown_does_not_wait_for_a_silent_client(liveness_server, silent_clients):
    """And it ends the session as a server going away, so that clients
    reconnect: a close frame 1001, and no Engine.IO close packet before it
    (python-socketio's client never reconnects after one)."""
    # Pings far apart: the session ends by the shutdown, not a ping timeout.
    server = liveness_server(ping_interval=60, ping_timeout=60)
    sock = open_silent_client(server.url)
    silent_clients.append(sock)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not [line for line in server.stderr.lines if "Killing" in line]
    header = recv_exactly(sock, 2)
    assert header[0] == 0x88, header  # the close frame, no text frame first
    code = int.from_bytes(recv_exactly(sock, header[1] & 0x7F)[:2], "big")
    assert code == 1001
    assert sock.recv(65536) == b""
