"""Idle WebSockets read by the event loop, not by a greenlet each
(oe_web_socketio.websocket's adoption of the connection, the server's
accounting of it): in this process, a real :class:`Server` serving a real
:class:`Application`, clients on gevent sockets speaking WebSocket with
wsproto, and the server's state looked at between two steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import gevent
import gevent.socket
import pytest
import wsproto
import wsproto.events
from engineio import packet as eio_packet
from oe_web_socketio.app import Application
from oe_web_socketio.config import Config
from oe_web_socketio.server import Server
from socketio_testing import RawWebSocket

pytestmark = pytest.mark.timeout(30)

TARGET = "/socket.io/?EIO=4&transport=websocket"

#: The access log line of a WebSocket request.
ACCESS = f'"GET {TARGET} HTTP/1.1" 101 '


class Client(RawWebSocket):
    """A WebSocket client on a gevent socket (this process serves too)."""

    create_connection = staticmethod(gevent.socket.create_connection)

    #: Every client, closed at the end of the test (the ``serve`` fixture).
    opened: ClassVar[list[Client]] = []

    def __init__(self, server: Server) -> None:
        super().__init__(server.url)
        self.opened.append(self)

    def events(self) -> list[Any]:
        """The events until the server closes the connection."""
        with gevent.Timeout(10):
            return self.rest()[1]


def unknown_namespace(client: Client, path: str) -> None:
    """Ask for namespace *path* (none is registered): the server answers."""
    client.send(f"40{path},")
    assert client.text().startswith(f"44{path},")


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.01)


def idle(server: Server, count: int) -> Callable[[], bool]:
    """Whether *count* WebSockets are open and adopted, with no greenlet
    of a request left."""
    return lambda: (
        len(server.adopted) == count
        and server.open_connections == count
        and not len(server.pool)
    )


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "oe_web_socketio.access" and ACCESS in r.getMessage()
    ]


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Server, Application]]]:
    """``serve(max_connections, **settings)``: the application of
    *settings* served on a free port; stopped after the test."""
    started: list[Server] = []

    def start(
        max_connections: int | None = None, **settings: Any
    ) -> tuple[Server, Application]:
        application = Application(Config(load_entry_points=False, **settings))
        server = Server(("127.0.0.1", 0), application, max_connections=max_connections)
        server.start()
        started.append(server)
        return server, application

    yield start
    for client in Client.opened:
        client.sock.close()
    Client.opened.clear()
    for server in started:
        server.stop(timeout=1)


def test_an_idle_websocket_holds_no_greenlet_and_reads_what_comes(serve, caplog):
    caplog.set_level(logging.INFO, logger="oe_web_socketio.access")
    server, _ = serve()
    client = Client(server)
    unknown_namespace(client, "/a")
    wait_for(idle(server, 1))
    # Sent right after it went idle: read, answered, idle again.
    unknown_namespace(client, "/b")
    wait_for(idle(server, 1))
    # Two messages in one read: both answered.
    client.send("40/c,", "40/d,")
    assert client.text().startswith("44/c,")
    assert client.text().startswith("44/d,")
    wait_for(idle(server, 1))
    # The request's access line waits for the end of the connection.
    assert access_lines(caplog) == []
    client.sock.close()
    wait_for(idle(server, 0))
    [line] = access_lines(caplog)
    assert line.startswith("127.0.0.1 - - [")


def test_an_attached_websocket_keeps_no_queue_storage(serve):
    """Its packets go to the transport (PacketQueue.sink): the session's
    queue frees its deques (2.3 KiB), and allocates them again if used."""
    server, application = serve()
    client = Client(server)
    unknown_namespace(client, "/a")
    [session] = application.sio.eio.sockets.values()
    queue = session.queue
    assert queue.sink is not None and queue._items is None
    assert queue.qsize() == 0 and queue.join(0)
    transport, queue.sink = queue.sink, None  # as before the WebSocket
    queue.put(eio_packet.Packet(eio_packet.NOOP))
    assert queue._items is not None
    assert queue.get_nowait().packet_type == eio_packet.NOOP
    queue.task_done()
    queue.release()
    assert queue._items is None
    queue.sink = transport


def test_a_client_that_closes_while_idle_ends_its_session(serve):
    server, application = serve()
    client = Client(server)
    unknown_namespace(client, "/a")
    wait_for(idle(server, 1))
    assert len(application.sio.eio.sockets) == 1
    client.send(wsproto.events.CloseConnection(code=1000))
    events = client.events()
    assert isinstance(events[-1], wsproto.events.CloseConnection)
    assert events[-1].code == 1000
    wait_for(idle(server, 0))
    # Out of python-engineio's sessions too (max_connections counts them).
    wait_for(lambda: not application.sio.eio.sockets)


def test_a_half_frame_then_silence_ends_at_the_ping_timeout(serve):
    """The greenlet waiting for the rest of a message is released by the
    session's end, as a request's was."""
    server, application = serve(ping_interval=0.5, ping_timeout=0.5)
    client = Client(server)
    whole = client.ws.send(wsproto.events.TextMessage("40/half,"))
    client.sock.sendall(whole[: len(whole) - 3])
    client.events()  # a ping, then the end, from the server
    wait_for(idle(server, 0))
    assert not application.sio.eio.sockets


def test_shutdown_closes_idle_websockets_going_away(serve, caplog):
    server, application = serve()
    clients = [Client(server) for _ in range(3)]
    for client in clients:
        unknown_namespace(client, "/a")
    wait_for(idle(server, 3))
    server.close()
    application.shutdown()
    server.stop(timeout=5)
    for client in clients:
        events = client.events()
        assert events[-1].code == 1001, events
    assert server.open_connections == 0 and not server.adopted
    assert "Killing" not in caplog.text


def test_stop_cuts_idle_websockets_still_open_at_its_timeout(serve, caplog):
    server, _ = serve()
    client = Client(server)
    unknown_namespace(client, "/a")
    wait_for(idle(server, 1))
    server.stop(timeout=0.1)
    assert "Killing 1 connection(s) still open after 0.1 s" in caplog.text
    client.events()  # the end, without a close frame
    assert server.open_connections == 0 and not server.adopted


def test_max_connections_counts_idle_websockets(serve):
    """An adopted WebSocket is still a connection: beyond the cap, the
    next one waits in the kernel's backlog until it ends."""
    server, _ = serve(max_connections=1)
    client = Client(server)
    unknown_namespace(client, "/a")
    wait_for(idle(server, 1))
    waiting = gevent.socket.create_connection(server.address[:2], timeout=10)
    waiting.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    gevent.sleep(0.2)  # long enough to be answered, were it accepted
    assert server.open_connections == 1
    client.sock.close()
    with gevent.Timeout(10):
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200 ")
    waiting.close()
