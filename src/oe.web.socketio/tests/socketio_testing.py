"""Helpers of the Socket.IO tests: a recording client, the test server.

A test module imports from here what it needs; the server processes come
from the ``spawn_server`` fixture of ``conftest.py``. Nothing here sleeps to
synchronise: :meth:`Client.sync` is a round trip, after which everything
the server sent the client before has arrived (a connection delivers in
order).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import time
from pathlib import Path
from typing import Any

import requests
import socketio
import wsproto
import wsproto.events

#: This directory: the test servers import ``sample_namespaces`` from it.
TESTS_DIR = Path(__file__).resolve().parent

#: Seconds any single exchange with a test server may take.
TIMEOUT = 5.0

#: The namespaces of ``sample_namespaces`` the tests serve, as ``-n`` options.
NAMESPACE_OPTIONS = (
    "-n",
    "/chat=sample_namespaces:Chat",
    "-n",
    "/private=sample_namespaces:Private",
    "-n",
    "/public=sample_namespaces:Public",
    "-n",
    "/refusing=sample_namespaces:Refusing",
    "-n",
    "/broken=sample_namespaces:Broken",
)

TRANSPORTS = ("websocket", "polling")


def serve_tests_dir(monkeypatch: Any, *more: Path) -> None:
    """Let the server processes started from now import this directory
    (and *more*)."""
    paths = [str(TESTS_DIR), *map(str, more)]
    current = os.environ.get("PYTHONPATH")
    if current:
        paths.append(current)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """*size* bytes read from *sock*; fails if the server closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed by the server"
        data += chunk
    return data


def health(server: Any) -> dict[str, Any]:
    """The ``/health`` answer of *server*."""
    answer = requests.get(f"{server.url}/health", timeout=TIMEOUT)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def count_lines(server: Any, pattern: str) -> int:
    """How many lines of *server*'s log match the regular expression, of
    those read so far."""
    regex = re.compile(pattern)
    return sum(1 for line in server.stderr.lines if regex.search(line))


def lines(server: Any, pattern: str, expected: int) -> int:
    """The number of lines of *server*'s log matching *pattern*, once
    there are at least *expected* of them (or after :data:`TIMEOUT`).

    The server writes a line before it answers the request that caused
    it, but the tests read its log in a thread of their own, which may lag.
    """
    deadline = time.monotonic() + TIMEOUT
    while True:
        count = count_lines(server, pattern)
        if count >= expected or time.monotonic() >= deadline:
            return count
        time.sleep(0.01)


class Client:
    """A python-socketio client of one namespace that records what it
    receives.

    :ivar connect_error: the data of ``connect_error``, if any.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "/chat",
        transport: str = "websocket",
        *,
        auth: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.transport = transport
        self.auth = auth
        self.headers = headers or {}
        self.sio = socketio.Client(reconnection=False)
        self.connect_error: Any = None
        self._received: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.sio.on("*", self._record, namespace=namespace)
        self.sio.on("connect_error", self._refused, namespace=namespace)

    def _record(self, event: str, *args: Any) -> None:
        self._received.put((event, *args))

    def _refused(self, data: Any = None) -> None:
        self.connect_error = data

    def connect(self) -> Client:
        self.sio.connect(
            self.url,
            namespaces=[self.namespace],
            transports=[self.transport],
            auth=self.auth,
            headers=self.headers,
            wait_timeout=TIMEOUT,
        )
        return self

    def refused(self) -> Any:
        """Try to connect; return the ``connect_error`` data it must get."""
        try:
            self.connect()
        except socketio.exceptions.ConnectionError:
            return self.connect_error
        raise AssertionError(f"{self.namespace} accepted the connection")

    @property
    def sid(self) -> str:
        sid = self.sio.get_sid(self.namespace)
        assert sid is not None
        return sid

    def call(self, event: str, *args: Any) -> Any:
        """Emit *event* and return its acknowledgement."""
        return self.sio.call(event, args, namespace=self.namespace, timeout=TIMEOUT)

    def emit(self, event: str, *args: Any) -> None:
        """Emit *event* without asking for an acknowledgement."""
        self.sio.emit(event, args, namespace=self.namespace)

    def next(self) -> tuple[Any, ...]:
        """The next ``(event, *args)`` received."""
        try:
            return self._received.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"nothing received in {TIMEOUT} s") from None

    def sync(self) -> list[tuple[Any, ...]]:
        """Round-trip to the server; return what arrived until then."""
        self.call("echo")
        received = []
        while True:
            try:
                received.append(self._received.get_nowait())
            except queue.Empty:
                return received

    def authenticate(self, session: str) -> Any:
        return self.call("session_id", session)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
        self.sio.shutdown()


class Clients:
    """Makes :class:`Client` objects and closes them all at the end."""

    def __init__(self, url: str, transport: str) -> None:
        self.url = url
        self.transport = transport
        self._clients: list[Client] = []

    def new(self, namespace: str = "/chat", **options: Any) -> Client:
        """A client, not connected."""
        options.setdefault("transport", self.transport)
        client = Client(self.url, namespace, **options)
        self._clients.append(client)
        return client

    def connect(self, namespace: str = "/chat", **options: Any) -> Client:
        """A client, connected."""
        return self.new(namespace, **options).connect()

    def close(self) -> None:
        for client in self._clients:
            client.close()


def raw_polling_session(url: str, namespace: str = "/chat") -> RawPolling:
    """An Engine.IO polling session, connected to *namespace*."""
    return RawPolling(url).open(namespace)


class RawPolling:
    """An Engine.IO session over polling, spoken with plain HTTP requests,
    to send what no Socket.IO client would."""

    def __init__(self, url: str) -> None:
        self.base = f"{url}/socket.io/?EIO=4&transport=polling"
        self.http = requests.Session()
        self.sid = ""
        self.socket_sid = ""

    def open(self, namespace: str) -> RawPolling:
        answer = self.http.get(self.base, timeout=TIMEOUT)
        assert answer.text.startswith("0"), answer.text
        self.sid = json.loads(answer.text[1:])["sid"]
        self.post(f"40{namespace},")
        packets = self.get()
        assert packets[0].startswith(f"40{namespace},{{"), packets
        #: The Socket.IO session id in *namespace*.
        self.socket_sid = json.loads(packets[0].partition(",")[2])["sid"]
        return self

    def post(self, body: str | bytes) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        return self.http.post(f"{self.base}&sid={self.sid}", data=data, timeout=TIMEOUT)

    def get(self) -> list[str]:
        """The packets of one poll (the server answers at once if it has
        some queued)."""
        answer = self.http.get(f"{self.base}&sid={self.sid}", timeout=TIMEOUT)
        if answer.status_code != 200:
            return [f"HTTP {answer.status_code} {answer.text}"]
        return answer.text.split("\x1e")

    def close(self) -> None:
        """End the session (a close packet; refused if it has ended
        already), so that the server stops counting it at once."""
        if self.sid:
            with contextlib.suppress(requests.RequestException):
                self.post("1")
        self.http.close()


class RawWebSocket:
    """An Engine.IO WebSocket spoken with wsproto on a plain TCP socket:
    any frame can be sent, and every byte the server sends is seen.

    :param sid: the polling session to upgrade, or ``None`` for a
        WebSocket opened directly (its Engine.IO open packet is read, its
        session id kept in :attr:`sid`).
    """

    #: Opens the TCP connection (a gevent socket's, for a server in the
    #: test's own process).
    create_connection = staticmethod(socket.create_connection)

    def __init__(self, url: str, sid: str | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        target = "/socket.io/?EIO=4&transport=websocket"
        if sid is not None:
            target += f"&sid={sid}"
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock = self.create_connection((host, int(port)), timeout=TIMEOUT)
        self.target = target
        self.received: list[Any] = []
        self.send(wsproto.events.Request(host=host, target=target))
        accepted = self.next_event()
        assert isinstance(accepted, wsproto.events.AcceptConnection), accepted
        self.sid = sid or json.loads(self.text().removeprefix("0"))["sid"]

    def send(self, *events: Any) -> None:
        """Send wsproto events; a :class:`str` is a text message, a
        :class:`bytes` a binary one."""
        data = b""
        for item in events:
            event = item
            if isinstance(item, str):
                event = wsproto.events.TextMessage(item)
            elif isinstance(item, bytes):
                event = wsproto.events.BytesMessage(item)
            data += self.ws.send(event)
        self.sock.sendall(data)

    def next_event(self) -> Any:
        while not self.received:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed by the server"
            self.ws.receive_data(chunk)
            self.received.extend(self.ws.events())
        return self.received.pop(0)

    def text(self) -> str:
        """The next text message."""
        event = self.next_event()
        assert isinstance(event, wsproto.events.TextMessage), event
        return str(event.data)

    def rest(self) -> tuple[bytes, list[Any]]:
        """What the server sends until it closes the connection: the bytes,
        and the events they make (wsproto fails on anything that is not a
        WebSocket frame)."""
        rest = b""
        with contextlib.suppress(ConnectionResetError), self.sock:
            while chunk := self.sock.recv(65536):
                rest += chunk
        self.ws.receive_data(rest)
        return rest, [*self.received, *self.ws.events()]

    def closed(self) -> tuple[int, str]:
        """The code and reason of the close frame that ends what the
        server sends, once it has closed the connection; nothing but
        WebSocket frames came before."""
        rest, events = self.rest()
        assert b"HTTP/" not in rest, rest
        assert events, "no close frame"
        close = events[-1]
        assert isinstance(close, wsproto.events.CloseConnection), events
        return close.code, close.reason

    def close(self) -> None:
        self.sock.close()
