"""Property-based fuzzing (Hypothesis) of the packet decoding path, in
process: what a client sends over WebSocket or polling goes through
:func:`~oe_web_socketio.protocol.decode_engineio_packet` or
:func:`~oe_web_socketio.protocol.decode_engineio_payload`, then
python-engineio's decoder, then our Socket.IO
:class:`~oe_web_socketio.protocol.Packet`.

Properties: each raises nothing but its documented error; what our checks
accept, python-engineio decodes without raising, to the same packets; a
packet encoded by python-engineio or python-socketio decodes back to
itself. Inputs lean towards the protocols' own characters, so that most
examples get past the first byte.
"""

from __future__ import annotations

import io
import json
import logging

import engineio.packet as eio_packet
import engineio.payload as eio_payload
import gevent
import pytest
import socketio.packet as sio_packet
from hypothesis import HealthCheck, given, settings, strategies
from oe_web_socketio.app import Application
from oe_web_socketio.config import Config
from oe_web_socketio.protocol import (
    CLIENT_PACKET_TYPES,
    MAX_ATTACHMENTS,
    EngineIOPacketError,
    IncomingEvent,
    MalformedPacketError,
    Packet,
    decode_engineio_packet,
    decode_engineio_payload,
)

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Characters Engine.IO and Socket.IO packets are made of, and a few others.
PROTOCOL = '0123456789bd=/,-[]{}":_placeholdernum#?\x1e \\é\U0001f600'

protocol_text = strategies.text(
    alphabet=strategies.sampled_from(PROTOCOL) | strategies.characters(),
    max_size=60,
)

#: Headers of Socket.IO packets, to put fuzzed payloads behind.
headers = strategies.sampled_from(
    [
        "",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "2/chat,",
        "3/chat,12",
        "21-",
        "51-",
        "51-/chat,4",
        "69-",
        "59999999999-",
        "2/chat",
        "2/a?b=1,",
    ]
)

json_values = strategies.recursive(
    strategies.none()
    | strategies.booleans()
    | strategies.integers(-(10**30), 10**30)
    | strategies.floats(allow_nan=False, allow_infinity=False)
    | strategies.text(max_size=10),
    lambda children: (
        strategies.lists(children, max_size=4)
        | strategies.dictionaries(strategies.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)


# --- Engine.IO, what a WebSocket frame or a polling body holds


@FUZZ
@given(strategies.one_of(protocol_text, strategies.binary(max_size=40)))
def test_engineio_packet_check_raises_only_its_error(encoded):
    try:
        packet = decode_engineio_packet(encoded)
    except EngineIOPacketError as exc:
        assert 1000 <= exc.close_code < 1012
        return
    assert packet.packet_type in CLIENT_PACKET_TYPES
    # python-engineio decodes what the check accepted, and the same way.
    again = eio_packet.Packet(encoded_packet=encoded)
    # (repr: JSON's NaN is not equal to itself)
    assert repr((again.packet_type, again.data)) == repr(
        (packet.packet_type, packet.data)
    )


@FUZZ
@given(
    strategies.one_of(
        protocol_text.map(lambda text: text.encode(errors="surrogatepass")),
        strategies.binary(max_size=60),
    )
)
def test_engineio_payload_check_raises_only_its_error(body):
    try:
        packets = decode_engineio_payload(body)
    except EngineIOPacketError:
        return
    decoded = eio_payload.Payload(encoded_payload=body.decode()).packets  # UTF-8
    assert [(p.packet_type, p.data) for p in decoded] == [
        (p.packet_type, p.data) for p in packets
    ]
    assert all(p.packet_type in CLIENT_PACKET_TYPES for p in packets)


@FUZZ
@given(
    strategies.lists(
        strategies.one_of(
            strategies.text(max_size=20).map(
                lambda text: eio_packet.Packet(eio_packet.MESSAGE, text)
            ),
            strategies.binary(max_size=20).map(
                lambda data: eio_packet.Packet(eio_packet.MESSAGE, data)
            ),
            strategies.just(eio_packet.Packet(eio_packet.PONG)),
        ),
        min_size=1,
        max_size=eio_payload.Payload.max_decode_packets,
    )
)
def test_engineio_payload_round_trip(packets):
    body = eio_payload.Payload(packets=packets).encode().encode()
    # python-engineio's own encoding is ambiguous: a text message that
    # starts with a digit or holds the separator cannot come back as sent;
    # it is refused, or read as other packets ("4\x1e1": a message, then
    # a close).
    ambiguous = any(
        isinstance(p.data, str) and ("\x1e" in p.data or p.data[:1].isdigit())
        for p in packets
    )
    try:
        decoded = decode_engineio_payload(body)
    except EngineIOPacketError as exc:
        assert ambiguous, exc
        return
    if ambiguous:
        return
    for sent, received in zip(packets, decoded, strict=True):
        assert received.packet_type == sent.packet_type
        if isinstance(sent.data, bytes):
            assert received.data == sent.data


# --- Socket.IO, what an Engine.IO message holds


@FUZZ
@given(headers, protocol_text)
def test_socketio_decoding_raises_only_malformed_packet_error(header, rest):
    try:
        packet = Packet(encoded_packet=header + rest)
    except MalformedPacketError:
        return
    assert packet.attachment_count <= MAX_ATTACHMENTS
    if packet.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
        event = packet.data[0]
        assert isinstance(event, IncomingEvent)
        assert event.error is None or event == ""
        assert event.ack == (packet.id is not None)


@FUZZ
@given(
    strategies.sampled_from(["[0]", '{"a":[1]}', "[]", "[[0,1]]"]),
    strategies.lists(
        strategies.one_of(strategies.binary(max_size=8), strategies.text(max_size=8)),
        max_size=4,
    ),
)
def test_attachments_raise_only_malformed_packet_error(placeholder, attachments):
    header = '52-/chat,["file",{"_placeholder":true,"num":%s},%s]'
    packet = Packet(encoded_packet=header % (placeholder, placeholder))
    try:
        for attachment in attachments:
            if packet.add_attachment(attachment):
                break
    except MalformedPacketError:
        return


@FUZZ
@given(
    strategies.sampled_from([sio_packet.EVENT, sio_packet.ACK]),
    strategies.sampled_from([None, "/", "/chat", "/a/b"]),
    strategies.none() | strategies.integers(0, 10**12),
    strategies.text(min_size=1, max_size=10),
    strategies.lists(json_values, max_size=3),
)
def test_socketio_round_trip(packet_type, namespace, ack_id, name, args):
    data = [name, *args] if packet_type == sio_packet.EVENT else args
    sent = sio_packet.Packet(packet_type, data, namespace=namespace, id=ack_id)
    received = Packet(encoded_packet=sent.encode())
    assert (received.packet_type, received.id) == (packet_type, ack_id)
    assert received.namespace == (None if namespace == "/" else namespace)
    assert received.data == data
    if packet_type == sio_packet.EVENT:
        assert isinstance(received.data[0], IncomingEvent)
        assert received.data[0].error is None


# --- the polling path of the server itself, called as WSGI in process


class Errors(logging.Handler):
    """Records of level ERROR and above (tracebacks among them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def polling_app():
    """The application (namespace ``/`` only), and what it logs at ERROR."""
    app = Application(Config(load_entry_points=False))
    errors = Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    yield app, errors
    root.removeHandler(errors)
    app.sio.eio.disconnect()


def call(app, method: str, query: str, body: bytes = b"") -> tuple[int, bytes]:
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = int(status.split()[0])

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/socket.io/",
        "QUERY_STRING": query,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
    }
    content = b"".join(app(environ, start_response))
    return answer["status"], content


@FUZZ
@given(
    strategies.one_of(
        protocol_text.map(lambda text: text.encode(errors="surrogatepass")),
        strategies.binary(max_size=60),
        strategies.tuples(headers, protocol_text).map(
            lambda parts: ("4" + "".join(parts)).encode(errors="surrogatepass")
        ),
    )
)
def test_a_polling_post_is_accepted_or_refused_with_a_4xx(polling_app, body):
    app, errors = polling_app
    status, opened = call(app, "GET", "EIO=4&transport=polling")
    assert status == 200
    sid = json.loads(opened[1:])["sid"]
    status, content = call(app, "POST", f"EIO=4&transport=polling&sid={sid}", body)
    assert status in (200, 400, 413), (status, content)
    gevent.sleep(0)  # python-engineio handles each message in a greenlet
    gevent.sleep(0)
    assert not errors.records, errors.records[0].getMessage()
    if status != 200:
        # The session ended: every request of it is refused.
        status, content = call(app, "POST", f"EIO=4&transport=polling&sid={sid}", b"3")
        assert status == 400, content
    app.sio.eio.disconnect(sid)
