"""Tests of :mod:`oe_web_socketio.server`.

Two kinds: the server run in this process (gevent, unpatched: the client
side uses gevent sockets too, so the hub keeps running), and Socket.IO
handshakes with the real client against a real server process.
"""

from __future__ import annotations

import email.utils
import errno
import json
import logging
import re
import socket
import sys
from collections.abc import Iterator

import gevent
import gevent.event
import gevent.socket
import pytest
import requests
import socketio
import wsproto
import wsproto.events
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ListenError
from oe_web_socketio.server import (
    Handler,
    Server,
    make_server,
    set_keepalive,
    set_nodelay,
)
from socketio_testing import RawWebSocket

pytestmark = pytest.mark.timeout(30)


def hello_app(environ, start_response):
    body = b"hello"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server() -> Iterator[Server]:
    """An in-process server of :func:`hello_app` on a free port."""
    server = Server(("127.0.0.1", 0), hello_app)
    server.start()
    yield server
    server.stop(timeout=1)


def read_until_closed(sock: gevent.socket.socket, timeout: float = 5) -> bytes:
    chunks = []
    with gevent.Timeout(timeout):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- TCP_NODELAY


def get_hello_once(server: Server) -> None:
    """Start *server*, have one request of ``hello_app`` answered, stop it."""
    server.start()
    try:
        with gevent.socket.create_connection(server.address[:2]) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_until_closed(client).endswith(b"hello")
    finally:
        server.stop(timeout=1)


def test_set_nodelay_on_accepted_tcp_socket():
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()[:2]),
    ):
        accepted, _ = listener.accept()
        with accepted:
            assert not accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            set_nodelay(accepted)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_set_nodelay_leaves_unix_sockets_alone():
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        set_nodelay(left)  # TCP_NODELAY would raise OSError here
        left.sendall(b"x")
        assert right.recv(1) == b"x"


def test_server_sets_nodelay_before_handling():
    seen = []

    class RecordingHandler(Handler):
        def handle(self):
            seen.append(self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            super().handle()

    server = Server(("127.0.0.1", 0), hello_app)
    server.handler_class = RecordingHandler
    get_hello_once(server)
    assert len(seen) == 1 and seen[0] != 0


# --- TCP keepalive


def keepalive_options(sock: socket.socket) -> tuple[int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def test_set_keepalive_leaves_unix_sockets_alone():
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        set_keepalive(left, 1, 1, 1)  # TCP_KEEPIDLE would raise OSError here
        assert not left.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)


def test_server_sets_keepalive_before_handling():
    seen = []

    class RecordingHandler(Handler):
        def handle(self):
            seen.append(keepalive_options(self.socket))
            super().handle()

    class KeepaliveServer(Server):
        handler_class = RecordingHandler
        tcp_keepalive_idle = 7
        tcp_keepalive_interval = 3
        tcp_keepalive_count = 2

    server = KeepaliveServer(("127.0.0.1", 0), hello_app)
    get_hello_once(server)
    assert seen == [(1, 7, 3, 2)]
    # Linux gives an accepted socket the listening socket's options.
    assert server._inherits_tcp_options is (sys.platform == "linux")
    # Inherited from the listening socket (Linux), unless they differ
    # from what the server wants: then set on each connection.
    server = KeepaliveServer(("127.0.0.1", 0), hello_app)
    server.tcp_keepalive_idle = 9
    get_hello_once(server)
    assert seen[1:] == [(1, 9, 3, 2)]
    assert server._inherits_tcp_options is False


def test_default_keepalive_notices_a_vanished_peer_within_minutes():
    total = (
        Server.tcp_keepalive_idle
        + Server.tcp_keepalive_interval * Server.tcp_keepalive_count
    )
    assert 0 < total <= 300


# --- keep-alive and WebSocket requests


def test_plain_requests_keep_the_connection_alive(server):
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with gevent.socket.create_connection(server.address[:2]) as client:
        client.sendall(request + last)
        assert read_until_closed(client).count(b"HTTP/1.1 200 OK") == 2


def test_connection_is_closed_after_a_websocket_request(server):
    upgrade = (
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\n"
    )
    with gevent.socket.create_connection(server.address[:2]) as client:
        client.sendall(upgrade + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_until_closed(client).count(b"HTTP/1.1 200 OK") == 1


def test_a_websocket_request_keeps_no_parsed_headers():
    """They are in the environ, and the request lasts as long as the
    WebSocket (memory per idle connection, README "Benchmarks")."""
    handlers: list[Handler] = []
    seen = []

    class KeepingHandler(Handler):
        def handle(self):
            handlers.append(self)
            super().handle()

    def app(environ, start_response):
        seen.append((environ.get("HTTP_UPGRADE"), handlers[-1].headers))
        start_response("200 OK", [("Content-Length", "0")])
        return []

    server = Server(("127.0.0.1", 0), app)
    server.handler_class = KeepingHandler
    server.start()
    try:
        with gevent.socket.create_connection(server.address[:2]) as client:
            client.sendall(
                b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n"
            )
            read_until_closed(client)
    finally:
        server.stop(timeout=1)
    (plain, plain_headers), (upgrade, headers) = seen
    assert plain is None and plain_headers is not None
    assert upgrade == "websocket" and headers is None


def test_a_connection_is_handled_from_the_bottom_of_its_greenlet():
    """No gevent ``handle(*args)`` below the request: that call is a C
    recursion, whose C stack the greenlet of every WebSocket keeps in the
    heap (memory per idle connection, README "Benchmarks")."""
    bottoms = []

    def app(environ, start_response):
        frame = sys._getframe()
        while frame.f_back is not None:
            frame = frame.f_back
        bottoms.append(frame.f_code.co_qualname)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    server = Server(("127.0.0.1", 0), app)
    server.start()
    try:
        with gevent.socket.create_connection(server.address[:2]) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_until_closed(client).startswith(b"HTTP/1.1 200 OK")
    finally:
        server.stop(timeout=1)
    assert bottoms == ["Server._handle_and_close"]


class SendRecorder:
    """A handler's socket, whose writes (``send`` and ``sendall`` calls)
    are recorded."""

    def __init__(self, sock: gevent.socket.socket, sent: list[bytes]) -> None:
        self._wrapped = sock
        self.sent = sent

    def send(self, data: bytes) -> int:
        count: int = self._wrapped.send(data)
        self.sent.append(bytes(data[:count]))
        return count

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        self._wrapped.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self._wrapped, name)


def served_sendalls(app, requests_: bytes) -> tuple[list[bytes], bytes]:
    """The writes of the handler serving *requests_* with *app* on a real
    connection, and what the client read."""
    sent: list[bytes] = []

    class RecordingHandler(Handler):
        def handle(self):
            self.socket = SendRecorder(self.socket, sent)
            super().handle()

    server = Server(("127.0.0.1", 0), app)
    server.handler_class = RecordingHandler
    server.start()
    try:
        with gevent.socket.create_connection(server.address[:2]) as client:
            client.sendall(requests_)
            received = read_until_closed(client)
    finally:
        server.stop(timeout=1)
    return sent, received


def test_a_response_goes_out_in_one_write():
    # A poll's answer: headers and body in one write, not two segments.
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    sent, received = served_sendalls(hello_app, request + last)
    assert len(sent) == 2
    assert all(s.startswith(b"HTTP/1.1 200 OK\r\n") for s in sent)
    assert all(s.endswith(b"\r\n\r\nhello") for s in sent)
    assert b"".join(sent) == received


def test_a_large_body_is_not_copied_behind_its_headers():
    body = b"x" * (Handler.COALESCE_LIMIT + 1)

    def large_app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    sent, received = served_sendalls(large_app, request)
    assert [s[-4:] for s in sent] == [b"\r\n\r\n", b"xxxx"]
    assert received.endswith(b"\r\n\r\n" + body)


def test_request_headers_reach_the_environ_as_gevent_put_them():
    """The server's header parser (not gevent's email.parser) fills the
    environ as gevent did: repeated fields joined (cookies with ``;``),
    names with ``_`` dropped, surrounding whitespace stripped, bytes as
    Latin-1, bare LF line ends taken."""
    seen = []

    def app(environ, start_response):
        seen.append(
            {k: v for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_"))}
        )
        start_response("200 OK", [("Content-Length", "0")])
        return []

    _, received = served_sendalls(
        app,
        b"POST / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nx-a:2 \r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nX_Forwarded_For: 6.6.6.6\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n"
        b"X-Text: \tcaf\xe9 au lait\t\nConnection: close\r\n\r\nok",
    )
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert seen == [
        {
            "HTTP_HOST": "t",
            "HTTP_X_A": "1,2",
            "HTTP_COOKIE": "a=1; b=2",
            "CONTENT_TYPE": "text/plain",
            "CONTENT_LENGTH": "2",
            "HTTP_X_TEXT": "caf\xe9 au lait",
            "HTTP_CONNECTION": "close",
        }
    ]


def test_every_response_has_one_date_header():
    def dated_app(environ, start_response):
        headers = [("Content-Length", "0")]
        if environ["PATH_INFO"] == "/dated":
            headers.append(("Date", "Sun, 06 Nov 1994 08:49:37 GMT"))
        start_response("200 OK", headers)
        return [b""]

    requests_ = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2 + (
        b"GET /dated HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    sent, _ = served_sendalls(dated_app, requests_)
    dates = [re.findall(rb"\r\nDate: ([^\r]*)\r\n", s) for s in sent]
    assert [len(d) for d in dates] == [1, 1, 1]
    for (date,) in dates[:2]:
        when = email.utils.parsedate_to_datetime(date.decode())
        assert when.tzinfo is not None
    assert dates[2] == [b"Sun, 06 Nov 1994 08:49:37 GMT"]


def test_access_line_is_formatted_only_when_logged(caplog):
    formatted = []

    class CountingHandler(Handler):
        def format_request(self):
            formatted.append(self.requestline)
            return super().format_request()

    server = Server(("127.0.0.1", 0), hello_app)
    server.handler_class = CountingHandler
    caplog.set_level(logging.WARNING, logger="oe_web_socketio.access")
    get_hello_once(server)
    assert formatted == []
    caplog.set_level(logging.INFO, logger="oe_web_socketio.access")
    get_hello_once(server)
    assert formatted == ["GET / HTTP/1.1"]
    access = [r for r in caplog.records if r.name == "oe_web_socketio.access"]
    assert len(access) == 1 and '"GET / HTTP/1.1" 200' in access[0].getMessage()


def test_connection_is_closed_when_the_app_took_the_socket_over():
    def silent_app(environ, start_response):
        return []  # as python-engineio does once a WebSocket has ended

    server = Server(("127.0.0.1", 0), silent_app)
    server.start()
    try:
        with gevent.socket.create_connection(server.address[:2]) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
            assert read_until_closed(client) == b""
    finally:
        server.stop(timeout=1)


# --- start and stop


def test_start_on_a_taken_port_raises_listen_error_and_can_be_retried():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = Server(("127.0.0.1", port), hello_app)
        with pytest.raises(ListenError) as info:
            server.start()
    assert (info.value.interface, info.value.port) == ("127.0.0.1", port)
    assert info.value.errno == errno.EADDRINUSE
    assert info.value.reason == "Address already in use"
    assert not server.started
    server.start()  # the port is free now
    try:
        assert server.started
        assert server.address[1] == port
    finally:
        server.stop(timeout=1)


def test_start_on_an_unknown_host_raises_listen_error():
    server = Server(("host.invalid", 0), hello_app)
    with pytest.raises(ListenError) as info:
        server.start()
    assert info.value.interface == "host.invalid"
    assert isinstance(info.value.__cause__, socket.gaierror)


def test_stop_kills_connections_left_open_after_the_timeout(server, caplog):
    address = server.address[:2]
    with gevent.socket.create_connection(address) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        with gevent.Timeout(5):
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")
        # The connection is kept alive: stop() has to end it.
        with caplog.at_level(logging.WARNING, logger="oe_web_socketio.server"):
            server.stop(timeout=0.2)
        assert read_until_closed(client) == b""
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["Killing 1 connection(s) still open after 0.2 s"]
    with pytest.raises(ConnectionRefusedError):
        gevent.socket.create_connection(address).close()
    server.stop()  # again: harmless


def test_stop_waits_for_a_request_in_progress():
    started, release = gevent.event.Event(), gevent.event.Event()

    def slow_app(environ, start_response):
        started.set()
        release.wait()
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    server = Server(("127.0.0.1", 0), slow_app)
    server.start()
    with gevent.socket.create_connection(server.address[:2]) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert started.wait(5)
        gevent.spawn_later(0.1, release.set)
        server.stop(timeout=5)
        assert release.is_set()
        assert read_until_closed(client).endswith(b"done")


def test_make_server_uses_interface_and_port():
    server = make_server(Config(interface="127.0.0.1", port=0), hello_app)
    assert server.address == ("127.0.0.1", 0)
    assert server.application is hello_app
    assert server.environ["SERVER_NAME"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("address", "url"),
    [(("127.0.0.1", 8068), "http://127.0.0.1:8068"), (("::1", 1), "http://[::1]:1")],
)
def test_url(address, url):
    assert Server(address, hello_app).url == url


# --- Socket.IO handshakes against a real server process


@pytest.mark.parametrize(
    "transports", [["websocket"], ["polling"], ["polling", "websocket"]]
)
def test_socketio_handshake(spawn_server, transports):
    server = spawn_server()
    client = socketio.Client(reconnection=False)
    try:
        client.connect(server.url, transports=transports, wait_timeout=10)
        assert client.connected
        assert client.sid
        assert client.transport() == transports[-1]
        answer = requests.get(f"{server.url}/health", timeout=5).json()
        assert answer["clients"] == 1
    finally:
        client.disconnect()


def upgrade(url: str) -> RawWebSocket:
    """A raw upgrade from polling to WebSocket: every byte the server
    sends is seen."""
    handshake = requests.get(f"{url}/socket.io/?EIO=4&transport=polling", timeout=5)
    return RawWebSocket(url, json.loads(handshake.text[1:])["sid"])


def access_log(raw: RawWebSocket) -> re.Pattern[str]:
    """The access log line of the WebSocket request of *raw*."""
    request = f"GET {raw.target} HTTP/1.1"
    return re.compile(rf'"{re.escape(request)}" (\d+) ')


def test_a_websocket_upgraded_from_polling_ends_with_frames_only(spawn_server):
    """When the client closes a WebSocket it upgraded to from polling,
    python-engineio answers its request 200 as if it were a poll; those
    HTTP bytes must not follow the close frame on the connection (browsers
    report "Invalid frame header")."""
    server = spawn_server()
    raw = upgrade(server.url)
    raw.send("2probe")
    assert raw.text() == "3probe"
    raw.send("5", wsproto.events.CloseConnection(code=1000))
    # Frames only (RawWebSocket.closed checks it); ours is the last.
    assert raw.closed()[0] == 1000
    # The access log tells what the connection became.
    assert server.stderr.wait_for(access_log(raw), 5).group(1) == "101"


def test_a_client_gone_in_the_middle_of_an_upgrade_is_no_error(spawn_server):
    """The probe and a close frame at once (a page closing while its
    socket upgrades): python-engineio's answer to the probe fails with a
    bare OSError, which gevent's handler cannot read (IndexError, a
    traceback per such client). The request just ends."""
    server = spawn_server()
    raw = upgrade(server.url)
    raw.send("2probe", wsproto.events.CloseConnection(code=1001))
    rest, _ = raw.rest()
    assert b"HTTP/" not in rest
    assert server.stderr.wait_for(access_log(raw), 5).group(1) == "101"
    # The server goes on; what it wrote about that client is not an error.
    client = socketio.Client(reconnection=False)
    client.connect(server.url, transports=["polling", "websocket"], wait_timeout=10)
    client.disconnect()
    lines = server.stderr.lines
    assert not [line for line in lines if "Traceback" in line or "ERROR" in line], lines


def accepted_extensions(url: str) -> list[str]:
    """Open a WebSocket offering ``permessage-deflate``, as every browser
    does; return the names of the extensions the server accepted."""
    from wsproto.extensions import PerMessageDeflate

    host, port = url.removeprefix("http://").split(":")
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            connection.send(
                wsproto.events.Request(
                    host=host,
                    target="/socket.io/?EIO=4&transport=websocket",
                    extensions=[PerMessageDeflate()],
                )
            )
        )
        while True:
            chunk = sock.recv(65536)
            assert chunk, "closed before the handshake's answer"
            connection.receive_data(chunk)
            for event in connection.events():
                assert isinstance(event, wsproto.events.AcceptConnection), event
                return [extension.name for extension in event.extensions]


def test_websocket_compression_is_off_unless_set(spawn_server, tmp_path):
    """permessage-deflate, which browsers always offer, is refused by
    default (simple-websocket accepts it whenever offered: twice the CPU
    per delivery and ~90 KiB of zlib state per connection), and accepted
    with ``websocket_compression``."""
    assert accepted_extensions(spawn_server().url) == []
    config = tmp_path / "compression.conf"
    config.write_text("[oe_web_socketio]\nwebsocket_compression = true\n")
    compressing = spawn_server("-c", str(config))
    assert accepted_extensions(compressing.url) == ["permessage-deflate"]
