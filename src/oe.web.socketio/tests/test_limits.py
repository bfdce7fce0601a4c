"""The caps of :mod:`oe_web_socketio.limits`: bytes queued for a client that
does not read, sessions per process, sessions that never join a namespace.

The queue itself is tested alone; the rest against real server processes,
with raw clients (a TCP socket speaking WebSocket that stops reading; plain
HTTP requests for polling) beside python-socketio clients that behave.
"""

from __future__ import annotations

import json
import socket

import pytest
import requests
import socketio
import wsproto
from engineio import packet as eio_packet
from oe_web_socketio.limits import PacketQueue, QueueFull, packet_size
from socketio_testing import (
    NAMESPACE_OPTIONS,
    TIMEOUT,
    Client,
    RawPolling,
    RawWebSocket,
    count_lines,
    health,
    lines,
    serve_tests_dir,
)

pytestmark = pytest.mark.timeout(60)

#: The cap of the servers of these tests, and the size of their messages:
#: about ten messages fit.
MAX_QUEUED = 1_000_000
MESSAGE = "x" * 100_000
#: Messages published to a client that does not read: enough to fill the
#: kernel's buffers on both sides (a few MB on loopback) and then the cap.
FLOOD = 300

SLOW_READER = "does not read what it is sent"


def message(size: int = 10) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, data="2" + "x" * (size - 1))


def test_the_queue_counts_the_bytes_of_messages_only():
    queue = PacketQueue(limit=100)
    queue.put(eio_packet.Packet(eio_packet.OPEN, {"sid": "x"}))
    assert queue.queued_bytes == 0 and not queue.used
    queue.put(message(60))
    queue.put(eio_packet.Packet(eio_packet.PING))
    assert queue.queued_bytes == 60 and queue.used
    queue.put(message(40))
    with pytest.raises(QueueFull) as refused:
        queue.put(message(1))
    assert (refused.value.queued, refused.value.size) == (100, 1)
    assert "100 bytes queued, a message of 1" in str(refused.value)
    # Control packets and the writer's stop always pass.
    queue.put(eio_packet.Packet(eio_packet.CLOSE))
    queue.put(None)
    assert queue.get_nowait().packet_type == eio_packet.OPEN
    assert queue.get(timeout=1).data.startswith("2x")
    assert queue.queued_bytes == 40
    queue.task_done()
    queue.task_done()
    assert queue.discard() == 40
    assert queue.queued_bytes == 0 and queue.qsize() == 0
    queue.join()  # every item accounted for


def test_one_message_larger_than_the_cap_passes_alone():
    queue = PacketQueue(limit=100)
    queue.put(message(500))
    with pytest.raises(QueueFull):
        queue.put(message(1))
    assert packet_size(queue.get_nowait()) == 500
    queue.put(message(1))


@pytest.fixture
def limited(tmp_path, spawn_server, monkeypatch):
    """A server with a small queue cap and connect timeout; *settings*
    replace them."""
    serve_tests_dir(monkeypatch)

    def spawn(**settings):
        settings = {
            "max_queued_bytes": MAX_QUEUED,
            "connect_timeout": 1,
            # No line per event: the tests search the log.
            "message_log_format": "",
            "max_event_size": 2 * len(MESSAGE),
            **settings,
        }
        config = tmp_path / "limits.cfg"
        config.write_text(
            "[oe_web_socketio]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        return spawn_server("-c", str(config), *NAMESPACE_OPTIONS)

    return spawn


def frames(raw: RawWebSocket) -> list:
    """What the server sent *raw* until it closed the connection, as
    wsproto events (which fail on a frame that is not whole)."""
    raw.sock.settimeout(TIMEOUT)
    return raw.rest()[1]


def test_a_websocket_client_that_stops_reading_is_disconnected(limited):
    server = limited()
    good = Client(server.url, "/public").connect()
    assert good.call("subscribe", "feed") is True
    # The raw client joins and subscribes, then reads nothing more.
    stuck = RawWebSocket(server.url)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
    stuck.send("40/public,", '42/public,["subscribe","feed"]')
    publisher = Client(server.url, "/public").connect()
    assert health(server)["clients"] == 3
    received: list[int] = []
    try:
        for number in range(FLOOD):
            publisher.emit("broadcast_channel", {"n": number, "body": MESSAGE}, "feed")
            # Paced by the client that reads (in this busy test process it
            # reads slower than the server sends: a lag past the cap would
            # cut it too), and everything it got is in order.
            if number % 5 == 4:
                while len(received) <= number:
                    _event, payload, *_ = good.next()
                    received.append(payload["n"])
                assert received == list(range(number + 1))
                if number % 10 == 9 and lines(server, SLOW_READER, 0):
                    break
        assert lines(server, SLOW_READER, 1) == 1
        line = next(line for line in server.stderr.lines if SLOW_READER in line)
        assert "from 127.0.0.1" in line and f"({MAX_QUEUED})" in line
        assert health(server)["clients"] == 2
        assert good.call("echo", 1) == 1
        # What the stuck client gets once it reads: whole messages, in
        # order, then the end of the connection, which may cut the last
        # one (no close frame: it would wait behind what the client did
        # not read).
        texts = [e for e in frames(stuck) if isinstance(e, wsproto.events.TextMessage)]
        assert all(event.message_finished for event in texts[:-1])
        numbers = [
            json.loads(event.data.removeprefix("42/public,"))[1]["n"]
            for event in texts
            if event.message_finished and event.data.startswith("42/public,")
        ]
        assert numbers and numbers == list(range(len(numbers)))
        assert count_lines(server, SLOW_READER) == 1
        assert count_lines(server, "Traceback") == 0
    finally:
        stuck.close()
        good.close()
        publisher.close()


def test_a_client_that_reads_late_gets_whole_messages(limited):
    """Below the cap, a client that pauses and then reads gets every
    message whole, in order: frames are written whole (simple-websocket
    wrote them with one non-blocking send, cutting them when the kernel's
    buffer was nearly full)."""
    server = limited(max_queued_bytes=100 * len(MESSAGE))
    late = RawWebSocket(server.url)
    late.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
    late.send("40/public,", '42/public,["subscribe","feed"]')
    publisher = Client(server.url, "/public").connect()
    count = 60  # 6 MB: more than the kernel's buffers hold
    try:
        for number in range(count):
            publisher.emit("broadcast_channel", {"n": number, "body": MESSAGE}, "feed")
            if number % 5 == 4:
                publisher.sync()
        numbers: list[int] = []
        text = ""
        while len(numbers) < count:
            event = late.next_event()
            assert isinstance(event, wsproto.events.TextMessage), event
            text += event.data  # wsproto hands a message over in parts
            if event.message_finished:
                if text.startswith("42/public,"):
                    numbers.append(json.loads(text[10:])[1]["n"])
                text = ""
        assert numbers == list(range(count))
        assert count_lines(server, SLOW_READER) == 0
    finally:
        late.close()
        publisher.close()


def test_a_polling_client_that_stops_polling_is_disconnected(limited):
    server = limited()
    stuck = RawPolling(server.url).open("/public")
    assert stuck.post('42/public,["subscribe","feed"]').status_code == 200
    publisher = Client(server.url, "/public").connect()
    try:
        for number in range(30):
            publisher.emit("broadcast_channel", {"n": number, "body": MESSAGE}, "feed")
        publisher.sync()
        assert lines(server, SLOW_READER, 1) == 1
        assert health(server)["clients"] == 1
        assert stuck.get()[0].startswith("HTTP 400")
    finally:
        stuck.close()
        publisher.close()


def test_handshakes_beyond_max_connections_are_refused_with_503(limited):
    server = limited(max_connections=2)
    first = Client(server.url, "/public").connect()
    second = RawPolling(server.url).open("/public")
    try:
        for _ in range(3):
            answer = requests.get(
                f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=TIMEOUT
            )
            assert answer.status_code == 503
            assert int(answer.headers["Retry-After"]) > 0
        refused = Client(server.url, "/public")
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect()
        refused.close()
        # One line for the burst.
        assert lines(server, "Refusing a new session", 1) == 1
        # The sessions there are still served.
        assert first.call("echo", 1) == 1
        assert second.post('42/public,7["echo",1]').status_code == 200
        assert second.get() == ["43/public,7[1]"]
        first.close()
        # A place is free again once a session ends.
        third = Client(server.url, "/public").connect()
        assert third.call("echo", 2) == 2
        third.close()
    finally:
        second.close()
        first.close()


def test_a_session_that_joins_no_namespace_is_closed(limited, wait_until):
    server = limited()
    unused = RawPolling(server.url)
    answer = unused.http.get(unused.base, timeout=TIMEOUT)
    unused.sid = answer.text.split('"sid":"')[1].split('"')[0]
    used = RawPolling(server.url).open("/public")
    try:
        assert lines(server, "asked for no namespace", 1) == 1
        assert unused.get()[0].startswith("HTTP 400")
        # The session that joined lives on.
        assert used.post('42/public,7["echo",1]').status_code == 200
        assert used.get() == ["43/public,7[1]"]
    finally:
        unused.close()
        used.close()
