"""Tests of :mod:`oe_web_socketio.protocol`: decoding in process, then what
a real server answers to packets no Socket.IO client would send, over
polling (plain HTTP) and WebSocket (websocket-client)."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket

import pytest
import requests
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
    RawWebSocket,
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


@pytest.fixture(scope="module")
def server(module_spawn_server, tmp_path_factory):
    """A server of the tests' namespaces, which the tests of this module
    share, and which logs every line: they count them, each its own (see
    test_logs.py for the rate limit)."""
    config = tmp_path_factory.mktemp("shared") / "oe.cfg"
    config.write_text("[oe_web_socketio]\nlog_rate_limit = 0\n")
    with pytest.MonkeyPatch.context() as patch:
        serve_tests_dir(patch)
        return module_spawn_server(*NAMESPACE_OPTIONS, "-c", str(config))


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
    pattern = f"Refused event '' of <Chat /chat {polling.socket_sid} "
    assert lines(server, pattern, 1) == 1
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
    pattern = f"Closing session {polling.sid} from 127.0.0.1: unexpected Engine.IO"
    assert lines(server, pattern, 1) == 1
    assert polling.get()[0].startswith("HTTP 400")


@pytest.fixture
def ws(server):
    url = (
        server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    )
    connection = websocket.create_connection(url, timeout=TIMEOUT)
    opened = connection.recv()
    assert opened.startswith("0{")
    connection.eio_sid = json.loads(opened[1:])["sid"]
    connection.send("40/chat,")
    assert connection.recv().startswith("40/chat,{")
    yield connection
    connection.close()
    # websocket-client's close() leaves the socket open when the server
    # closed first.
    connection.shutdown()


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
    opcode, frame = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame[:2], "big") == 1008  # policy violation
    assert frame[2:].startswith(b"malformed packet: invalid JSON")
    pattern = f"Closing session {ws.eio_sid} .*: malformed packet"
    assert lines(server, pattern, 1) == 1


def test_websocket_event_over_the_size_limit(server, bystander, ws):
    ws.send("42/chat,5" + json.dumps(["session_id", "x" * 70_000]))
    _, [payload] = answer(ws.recv())
    assert payload["error"]["code"] == "payload_too_large"
    ws.send("42/chat,6" + json.dumps(["session_id", session(1)]))
    assert answer(ws.recv())[1] == [{"uid": 1, "login": "admin", "db": "oe"}]


def test_engineio_garbage_harms_no_one_else(server, bystander, polling, ws):
    # Below Socket.IO: a refusal, a close frame, one line each, no traceback.
    assert polling.post("zzz").status_code == 400
    ws.send("zzz")
    assert ws.recv() == "1"  # Engine.IO CLOSE
    opcode, frame = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame[:2], "big") == 1002
    pattern = f"Closing session {polling.sid} .*: invalid Engine.IO payload 'zzz'"
    assert lines(server, pattern, 1) == 1
    pattern = f"Closing session {ws.eio_sid} .*: invalid Engine.IO packet 'zzz'"
    assert lines(server, pattern, 1) == 1
    assert health(server)["status"] == "ok"


# --- garbage below and around Socket.IO, against a server the tests share


def clients_now(server):
    return health(server)["clients"]


def joined(server) -> RawWebSocket:
    """A raw WebSocket connected to ``/chat``."""
    raw = RawWebSocket(server.url)
    raw.send("40/chat,")
    assert raw.text().startswith("40/chat,{")
    return raw


BINARY_EVENT = '451-/chat,["file",{"_placeholder":true,"num":0}]'


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        ([";x"], 1002, "invalid Engine.IO packet ';x'"),
        ([""], 1002, "Invalid empty packet received"),
        (["0"], 1002, "unexpected Engine.IO packet '0'"),  # OPEN
        (["2"], 1002, "unexpected Engine.IO packet '2'"),  # PING
        (["5"], 1002, "unexpected Engine.IO packet '5'"),  # UPGRADE
        (["6"], 1002, "unexpected Engine.IO packet '6'"),  # NOOP
        (["9"], 1002, "unexpected Engine.IO packet '9'"),
        (["4" + "[" * 100_000], 1002, "maximum recursion depth"),
        ([b"\x00\x01"], 1003, "unexpected binary message"),
        (["4"], 1008, "empty packet"),
        (["4x"], 1008, "malformed packet"),
        (["43/chat,1[bad"], 1008, "invalid JSON"),
        (["44/chat,{}"], 1008, "Unexpected CONNECT_ERROR"),
        (['4599-/chat,["x"]'], 1008, "more than 16 attachments"),
        ([BINARY_EVENT, '42/chat,["x"]'], 1003, "a binary attachment was expected"),
        (['451-/chat,["f",{"_placeholder":true,"num":7}]', b"x"], 1008, "attachment"),
    ],
)
def test_websocket_garbage_ends_the_session_with_a_close_frame(
    server, frames, code, reason
):
    before = clients_now(server)
    raw = joined(server)
    assert clients_now(server) == before + 1
    raw.send(*frames)
    closed = raw.closed()
    assert closed[0] == code and reason in closed[1], closed
    # Counted gone at once, not at the ping timeout (45 s).
    assert clients_now(server) == before
    assert lines(server, f"Closing session {raw.sid} from 127.0.0.1: ", 1) == 1


def test_websocket_frames_after_a_close_packet_are_not_handled(server):
    raw = joined(server)
    raw.send("1", '42/chat,["echo"]', "40/chat,", "41/chat,")
    assert raw.closed() == (1000, "")
    raw = RawWebSocket(server.url)
    raw.send("1", "40/chat,", '42/chat,["echo"]')
    assert raw.closed() == (1000, "")


def test_websocket_message_over_the_buffer_size(server):
    before = clients_now(server)
    raw = joined(server)
    raw.send("4" + "x" * 1_000_000)
    assert raw.closed()[0] == 1009  # message too big
    assert clients_now(server) == before
    assert lines(server, f"Closing session {raw.sid} .*: message over 1000000", 1)


def test_a_bad_upgrade_ends_the_polling_session_too(server):
    polling = RawPolling(server.url).open("/chat")
    raw = RawWebSocket(server.url, polling.sid)
    raw.send(";x")
    assert raw.closed()[0] == 1002
    assert polling.get()[0].startswith("HTTP 400")
    # A probe that is not one.
    polling = RawPolling(server.url).open("/chat")
    raw = RawWebSocket(server.url, polling.sid)
    raw.send("2nope")
    assert raw.closed() == (1002, "an upgrade starts with 2probe")


def test_a_refused_websocket_handshake_is_http(server):
    answer = requests.get(
        f"{server.url}/socket.io/?EIO=4&transport=websocket",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 400
    assert answer.text == "Invalid WebSocket handshake"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"4x\x1e1", 200, ""),  # a batch with a close packet: accepted
        (b'1\x1e40/chat,\x1e42/chat,["echo"]', 200, ""),  # more after the close
        (b"40/chat,\x1e\x1e3", 400, "Invalid empty packet"),
        (b"\x1e", 400, "Invalid empty packet"),
        (b"4\xff\xfe", 400, "invalid UTF-8"),
        (b"\x1e".join([b"3"] * 17), 400, "Too many packets"),
        (b"4" + b"[" * 100_000, 400, "maximum recursion depth"),
        (b"d=", 400, "invalid Engine.IO payload 'd='"),  # JSONP without d
        (b";x", 400, "invalid literal for int()"),
        (b"0", 400, "unexpected Engine.IO packet of type 0"),
        (b"2", 400, "unexpected Engine.IO packet of type 2"),
        (b"6", 400, "unexpected Engine.IO packet of type 6"),
        (b"4" + b"x" * 1_000_001, 413, "Payload over 1000000 bytes"),
    ],
)
def test_polling_garbage_is_refused_and_ends_the_session(server, body, status, detail):
    before = clients_now(server)
    polling = RawPolling(server.url).open("/chat")
    answer = polling.post(body)
    assert (answer.status_code, detail in answer.text) == (status, True), answer.text
    assert clients_now(server) == before
    assert polling.get() == ['HTTP 400 "Session is disconnected"']
    if status != 200:
        assert lines(server, f"Closing session {polling.sid} from 127.0.0.1: ", 1) == 1


def test_polling_body_shorter_than_its_length_is_refused(server):
    polling = RawPolling(server.url).open("/chat")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as client:
        client.sendall(
            f"POST /socket.io/?EIO=4&transport=polling&sid={polling.sid} HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Length: 100\r\n\r\n40/chat,".encode()
        )
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert polling.get() == ['HTTP 400 "Session is disconnected"']


def test_polling_requests_after_a_close_packet_are_refused(server):
    polling = RawPolling(server.url).open("/chat")
    assert polling.post("1").status_code == 200
    # python-engineio: 500 (KeyError: 'Session is disconnected'), then 400.
    answer = polling.post("40/chat,")
    assert (answer.status_code, answer.text) == (400, '"Session is disconnected"')
    assert polling.post("40/chat,").status_code == 400


def test_a_second_poll_while_one_is_held_ends_the_session(server):
    polling = RawPolling(server.url).open("/chat")
    # Nothing is queued: the poll that comes first is held until the other
    # one arrives, which is refused; the held one gets the close packet.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        polls = [pool.submit(polling.get) for _ in range(2)]
        answers = sorted(poll.result(TIMEOUT) for poll in polls)
    assert answers == [["1"], ['HTTP 400 "Overlapping poll"']]
    assert lines(server, f"Closing session {polling.sid} .*: a poll while", 1) == 1


@pytest.mark.parametrize(
    ("method", "query", "status"),
    [
        ("GET", "EIO=3&transport=polling", 400),
        ("GET", "EIO=4&transport=carrier-pigeon", 400),
        ("GET", "EIO=4&transport=websocket", 400),  # no Upgrade header
        ("GET", "EIO=4&transport=polling&sid=nope", 400),
        ("POST", "EIO=4&transport=polling&sid=nope", 400),
        ("POST", "EIO=4&transport=polling", 400),  # no sid
        ("PUT", "EIO=4&transport=polling", 405),
        ("DELETE", "EIO=4&transport=polling", 405),
        ("GET", "EIO=4&transport=polling&j=x", 400),  # JSONP index
    ],
)
def test_bad_engineio_requests_get_a_4xx(server, method, query, status):
    answer = requests.request(
        method, f"{server.url}/socket.io/?{query}", data=b"40", timeout=TIMEOUT
    )
    assert answer.status_code == status, answer.text


def test_no_traceback_nor_5xx_after_all_that(server):
    """Nor an ERROR line: each of these was the client's fault."""
    assert health(server)["status"] == "ok"
    faults = re.compile(r'Traceback|^\w+Error:|" 5\d\d | ERROR ')
    log = server.stderr.lines
    found = [i for i, line in enumerate(log) if faults.search(line)]
    assert not found, "\n".join(log[found[0] - 2 : found[0] + 40])
