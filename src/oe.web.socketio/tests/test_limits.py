"""The caps of :mod:`oe_web_socketio.limits`: bytes queued for a client that
does not read, sessions per process, sessions that never join a namespace.

The queue itself is tested alone; the rest against real server processes,
with raw clients (a TCP socket speaking WebSocket that stops reading; plain
HTTP requests for polling) beside python-socketio clients that behave.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
from pathlib import Path

import pytest
import requests
import socketio
import wsproto
from engineio import packet as eio_packet
from oe_web_socketio.app import Application
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ConfigError
from oe_web_socketio.limits import (
    PacketQueue,
    QueueFull,
    connection_limit,
    packet_size,
    raise_open_files_limit,
    reserved_descriptors,
    session_limit,
)
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


@contextlib.contextmanager
def soft_open_files_limit(soft: int):
    """This process's soft limit of open files at *soft* (no more than the
    hard one) meanwhile; yields the limits set."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = before[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield soft, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_the_soft_limit_of_open_files_is_raised_to_the_hard_one():
    with soft_open_files_limit(256) as (soft, hard):
        if hard == resource.RLIM_INFINITY:
            pytest.skip("no hard limit of open files")
        assert raise_open_files_limit() == (soft, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert raise_open_files_limit() == (hard, hard)


def test_max_connections_follows_from_the_open_files_limit():
    # 20,000 open files (the hard limit here), 200 for the server itself:
    # as many connections at once, less 2 % to answer a crowd 503.
    assert connection_limit(20_000, 200) == 19_800
    assert session_limit(Config(), 20_000, 200) == 19_800 - 396
    assert connection_limit(20_000, 200, per_session=2) == 9_900
    assert session_limit(Config(), 20_000, 200, per_session=2) == 9_900 - 198
    assert session_limit(Config(max_connections=9_900), 20_000, 200, 2) == 9_900
    assert session_limit(Config(max_connections=0), 1_000, 2_000) is None
    with pytest.raises(ConfigError) as refused:
        session_limit(Config(max_connections=9_901), 20_000, 200, 2)
    assert refused.value.key == "max_connections"
    assert str(refused.value) == (
        "max_connections: 9901 sessions need about 20002 open files, the limit "
        "is 20000 (200 for the server itself): raise the hard limit of open "
        "files (ulimit -Hn, systemd's LimitNOFILE) or set max_connections to "
        "9900 or less"
    )
    with pytest.raises(ConfigError, match=r"the open files limit \(150\) leaves"):
        session_limit(Config(), 150, 200)
    # Each database's connections are counted: the cursor pool, trytond's,
    # the bridge's LISTEN.
    one = reserved_descriptors(Config(databases=("a",), max_cursor=4))
    two = reserved_descriptors(Config(databases=("a", "b"), max_cursor=4))
    assert two - one == 4 + 9 + 1
    # trytond's follows the long-polling transactions once they are set.
    three = reserved_descriptors(
        Config(databases=("a", "b"), max_cursor=4, longpolling_transactions=6)
    )
    assert three - two == 2 * 2 * (6 - 4)


def test_an_application_refuses_more_sessions_than_open_files():
    """Whichever way it is served (the command line, a WSGI host's
    SocketIOMiddleware), the application raises the soft limit of open
    files to the hard one and takes its caps from that."""
    with soft_open_files_limit(1024) as (soft, hard):
        if hard == resource.RLIM_INFINITY:
            pytest.skip("no hard limit of open files")
        with pytest.raises(ConfigError, match=f"{hard + 1} sessions need about"):
            Application(Config(max_connections=hard + 1, load_entry_points=False))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        eio = Application(Config(load_entry_points=False)).sio.eio
        assert eio.open_files == (soft, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        # A WebSocket holds one descriptor; the server a few of its own.
        assert hard // 2 < eio.max_connections < eio.max_open_connections < hard


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
    with soft_open_files_limit(1024) as (soft, hard):
        server = limited(max_connections=2)
    # The server raised its soft limit, and says so.
    said = server.stderr.wait_for(
        re.compile(
            r"Open files limit (\d+) \(raised from (\d+)\); max_connections 2,"
            r" connections at once (\d+)$"
        ),
        TIMEOUT,
    )
    assert said.groups()[:2] == (str(hard), str(soft))
    # Each connection a descriptor or two, below the limit.
    assert int(hard) // 2 - 200 < int(said.group(3)) < int(hard)
    limits = (Path("/proc") / str(server.pid) / "limits").read_text()
    assert re.search(rf"Max open files +{hard} +{hard} ", limits)
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
