"""Tests of :mod:`oe_web_socketio.protocol`: decoding in process, then what
a real server answers to packets no Socket.IO client would send, over
polling (plain HTTP) and WebSocket (websocket-client)."""

from __future__ import annotations

import json

import pytest
import websocket
from oe_web_socketio.protocol import (
    EventError,
    IncomingEvent,
    MalformedPacketError,
    Packet,
    error_payload,
)
from sample_namespaces import session
from socketio_testing import (
    NAMESPACE_OPTIONS,
    TIMEOUT,
    Clients,
    RawPolling,
    health,
    lines,
    serve_tests_dir,
)

pytestmark = pytest.mark.timeout(60)


def decode(encoded):
    return Packet(encoded_packet=encoded)


# --- decoding, in process


def test_an_event_name_carries_size_and_acknowledgement():
    packet = decode('2/chat,12["shout","hi"]')
    event, *args = packet.data
    assert isinstance(event, IncomingEvent)
    assert (event, args, packet.namespace, packet.id) == ("shout", ["hi"], "/chat", 12)
    assert (event.size, event.ack, event.error) == (23, True, None)
    assert decode('2["shout"]').data[0].ack is False


@pytest.mark.parametrize(
    ("encoded", "error"),
    [
        ("2/chat,5[bad", "invalid JSON"),
        ('2/chat,5{"a":1}', "an event must be [name, *args]"),
        ("2/chat,5[]", "an event must be [name, *args]"),
        ("2/chat,5[1]", "an event name must be a string"),
        ("2/chat,5[" + "1" * 101 + "]", "Integer is too large"),
        ("2/chat,5" + "[" * 100_000 + "]" * 100_000, "recursion"),
    ],
)
def test_a_malformed_event_is_decoded_to_be_answered(encoded, error):
    packet = decode(encoded)
    [event] = packet.data
    assert event == "" and error in event.error
    assert (packet.namespace, packet.id, event.ack) == ("/chat", 5, True)


@pytest.mark.parametrize(
    "encoded",
    [
        "x",
        "0/chat,{bad",  # CONNECT
        "3/chat,1[bad",  # ACK
        "2/chat," + "1" * 101 + "[]",  # id too long
        "51-/chat,[bad",  # BINARY_EVENT
    ],
)
def test_other_undecodable_packets_raise(encoded):
    with pytest.raises(MalformedPacketError):
        decode(encoded)


def test_an_unexpected_binary_message_raises():
    with pytest.raises(MalformedPacketError, match="unexpected binary message"):
        decode(b"2x")


def test_binary_attachments_count_in_the_size():
    header = '51-/chat,["file",{"_placeholder":true,"num":0}]'
    packet = decode(header)
    assert packet.add_attachment(b"x" * 1000) is True
    event, data = packet.data
    assert data == b"x" * 1000
    assert event.size == len(header) + 1000
    with pytest.raises(MalformedPacketError):
        packet.add_attachment(b"more")


def test_encoding_is_python_socketio_s():
    packet = Packet(data=["message", "hi"], namespace="/chat")
    assert packet.encode() == '2/chat,["message","hi"]'


def test_error_payload_and_event_error():
    assert error_payload("forbidden", "no") == {
        "error": {"code": "forbidden", "message": "no"}
    }
    exc = EventError("teapot", "short and stout")
    assert (exc.code, exc.message, str(exc)) == (
        "teapot",
        "short and stout",
        "teapot: short and stout",
    )


# --- against a real server


@pytest.fixture
def server(spawn_server, monkeypatch):
    serve_tests_dir(monkeypatch)
    return spawn_server(*NAMESPACE_OPTIONS)


@pytest.fixture
def bystander(server):
    """A connected client, which nothing a misbehaving client does may
    disturb."""
    clients = Clients(server.url, "websocket")
    client = clients.connect(auth={"session": session(2)})
    client.call("subscribe", "room-1")
    yield client
    assert client.sync() == []
    assert client.call("whoami")["uid"] == 2
    clients.close()


@pytest.fixture
def polling(server):
    session = RawPolling(server.url).open("/chat")
    yield session
    session.close()


def answer(packet):
    """The Socket.IO payload of an Engine.IO message, as JSON."""
    prefix, _, payload = packet.partition(",")
    return prefix, json.loads(payload.lstrip("0123456789"))


def assert_malformed(payload, detail):
    assert payload["error"]["code"] == "malformed"
    assert detail in payload["error"]["message"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("42/chat,7[bad", "invalid JSON"),
        ('42/chat,7{"not":"a list"}', "an event must be [name, *args]"),
        ("42/chat,7[1]", "an event name must be a string"),
    ],
)
def test_polling_malformed_event_gets_an_error_acknowledgement(
    server, bystander, polling, body, detail
):
    assert polling.post(body).status_code == 200
    [packet] = polling.get()
    prefix, [payload] = answer(packet)
    assert prefix == "43/chat"  # the acknowledgement of id 7
    assert_malformed(payload, detail)
    assert lines(server, "Refused event '' of <Chat /chat", 1) == 1
    # The session goes on.
    polling.post("42/chat,8" + json.dumps(["session_id", session(1)]))
    [packet] = polling.get()
    assert answer(packet) == ("43/chat", [{"uid": 1, "login": "admin", "db": "oe"}])


def test_polling_malformed_event_without_id_gets_an_error_event(
    server, bystander, polling
):
    polling.post("42/chat,[bad")
    [packet] = polling.get()
    prefix, [event, payload] = answer(packet)
    assert (prefix, event) == ("42/chat", "error")
    assert_malformed(payload, "invalid JSON")


@pytest.mark.parametrize(
    "body",
    [
        "43/chat,1[bad",  # an ACK that cannot be decoded
        "4x",  # no Socket.IO packet at all
        "44/chat,{}",  # CONNECT_ERROR, which only servers send
    ],
)
def test_polling_undecodable_packet_ends_that_session(server, bystander, polling, body):
    assert polling.post(body).status_code == 200
    # The close packet is lost: python-engineio refuses every request of a
    # closed session, the client learns of the end by the refusal.
    assert polling.get()[0].startswith("HTTP 400")
    pattern = rf"Closing session {polling.sid} .*: malformed packet"
    assert lines(server, pattern, 1) == 1


def test_polling_unknown_engineio_packet_is_refused_at_once(server, bystander, polling):
    # python-engineio would wait for the client to poll again before
    # answering this request.
    answer = polling.post("9")
    assert answer.status_code == 400
    assert lines(server, f"Closing session {polling.sid}: invalid Engine.IO", 1) == 1
    assert polling.get()[0].startswith("HTTP 400")


@pytest.fixture
def ws(server):
    url = (
        server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    )
    connection = websocket.create_connection(url, timeout=TIMEOUT)
    assert connection.recv().startswith("0{")
    connection.send("40/chat,")
    assert connection.recv().startswith("40/chat,{")
    yield connection
    connection.close()


def test_websocket_malformed_event_gets_an_error_acknowledgement(server, bystander, ws):
    ws.send("42/chat,3[bad")
    prefix, [payload] = answer(ws.recv())
    assert prefix == "43/chat"
    assert_malformed(payload, "invalid JSON")
    ws.send("42/chat,4" + json.dumps(["echo", 1]))
    prefix, [payload] = answer(ws.recv())
    assert payload["error"]["code"] == "forbidden"


def test_websocket_undecodable_packet_ends_that_session(server, bystander, ws):
    ws.send("43/chat,1[bad")
    assert ws.recv() == "1"  # Engine.IO CLOSE
    assert lines(server, "Closing session .*: malformed packet", 1) == 1


def test_websocket_event_over_the_size_limit(server, bystander, ws):
    ws.send("42/chat,5" + json.dumps(["session_id", "x" * 70_000]))
    _, [payload] = answer(ws.recv())
    assert payload["error"]["code"] == "payload_too_large"
    ws.send("42/chat,6" + json.dumps(["session_id", session(1)]))
    assert answer(ws.recv())[1] == [{"uid": 1, "login": "admin", "db": "oe"}]


def test_engineio_garbage_harms_no_one_else(server, bystander, polling, ws):
    # Below Socket.IO, python-engineio has the last word: over polling it
    # logs a traceback and answers 200, over WebSocket the exception ends
    # that connection (its session goes at the next ping timeout).
    polling.post("zzz")
    ws.send("zzz")
    with pytest.raises(websocket.WebSocketException):
        ws.recv()
    assert lines(server, r"^ValueError: invalid literal for int\(\)", 2) == 2
    assert health(server)["status"] == "ok"
