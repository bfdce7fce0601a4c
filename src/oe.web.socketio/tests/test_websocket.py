"""RFC 6455 conformance of the WebSocket transport (oe_web_socketio.websocket),
with frames built by hand on raw sockets against one shared server.

What the server sends is parsed by wsproto's client (inside
:class:`RawWebSocket`), which fails on a frame that breaks the RFC, so the
server's own framing is checked on the way.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import zlib

import pytest
import wsproto.events
from socketio_testing import (
    NAMESPACE_OPTIONS,
    TIMEOUT,
    RawWebSocket,
    count_lines,
    lines,
    recv_exactly,
    serve_tests_dir,
)

pytestmark = pytest.mark.timeout(30)

#: The shared server's max_http_buffer_size: messages over it close 1009.
MAX_MESSAGE = 100_000

#: The shared server's max_queued_bytes: a burst of broadcasts passes it.
MAX_QUEUED = 10_000

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


@pytest.fixture(scope="module")
def server(module_spawn_server, tmp_path_factory):
    """One server for the module, compression allowed (a client that
    does not offer it gets none), every log line kept."""
    config = tmp_path_factory.mktemp("websocket") / "oe.cfg"
    config.write_text(
        "[oe_web_socketio]\nlog_rate_limit = 0\nwebsocket_compression = true\n"
        f"max_http_buffer_size = {MAX_MESSAGE}\nmax_queued_bytes = {MAX_QUEUED}\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        serve_tests_dir(patch)
        return module_spawn_server(*NAMESPACE_OPTIONS, "-c", str(config))


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    long: bool = False,
) -> bytes:
    """A client frame as sent on the wire; *long*: the 64-bit length form."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if long:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    elif length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    key = os.urandom(4)
    masked_payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked_payload


@pytest.fixture
def opened(server):
    """``opened()``: a WebSocket opened directly on the shared server
    (its open packet read), closed after the test."""
    sockets: list[RawWebSocket] = []

    def open_one() -> RawWebSocket:
        raw = RawWebSocket(server.url)
        sockets.append(raw)
        return raw

    yield open_one
    for raw in sockets:
        raw.close()


def refused(server, raw: RawWebSocket, wire: bytes) -> tuple[int, str]:
    """Send *wire*; the close frame's code and reason, once the server has
    closed the connection, and that it logged one line about it."""
    raw.sock.sendall(wire)
    code, reason = raw.closed()
    assert lines(server, f"Closing session {raw.sid} ", 1) == 1
    return code, reason


def test_an_unmasked_client_frame_is_refused(server, opened):
    raw = opened()
    code, reason = refused(server, raw, client_frame(TEXT, b"3", masked=False))
    assert code == 1002
    assert "unmasked" in reason


def test_a_fragmented_text_with_a_ping_inside_is_one_message(server, opened):
    raw = opened()
    raw.sock.sendall(
        client_frame(TEXT, b"40/ch", fin=False)
        + client_frame(PING, b"inside")
        + client_frame(CONTINUATION, b"at", fin=False)
        + client_frame(CONTINUATION, b",")
    )
    pong = raw.next_event()
    assert isinstance(pong, wsproto.events.Pong)
    assert pong.payload == b"inside"
    assert raw.text().startswith("40/chat,{")


def test_a_ping_is_answered_with_its_payload(server, opened):
    raw = opened()
    payload = bytes(range(125))  # the most a control frame holds
    raw.sock.sendall(client_frame(PING, payload))
    pong = raw.next_event()
    assert isinstance(pong, wsproto.events.Pong)
    assert pong.payload == payload


def test_the_close_handshake_echoes_the_code(server, opened):
    raw = opened()
    raw.sock.sendall(client_frame(CLOSE, struct.pack("!H", 4000) + b"bye"))
    assert raw.closed()[0] == 4000
    assert count_lines(server, f"Closing session {raw.sid} ") == 0


def test_invalid_utf8_in_text_is_refused_1007(server, opened):
    raw = opened()
    # Split inside the message: the decoder must carry state across frames.
    wire = client_frame(TEXT, b"4\xc3", fin=False) + client_frame(CONTINUATION, b"\x28")
    assert refused(server, raw, wire)[0] == 1007


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (client_frame(TEXT, b"3", rsv=0b100), "RSV1 without an extension"),
        (client_frame(TEXT, b"3", rsv=0b010), "RSV2"),
        (client_frame(0x3, b"3"), "reserved data opcode"),
        (client_frame(0xB, b""), "reserved control opcode"),
        (client_frame(PING, b"x" * 126), "control frame over 125 bytes"),
        (client_frame(PING, b"x", fin=False), "fragmented control frame"),
        (client_frame(CONTINUATION, b"3"), "continuation of nothing"),
        (
            client_frame(TEXT, b"4", fin=False) + client_frame(TEXT, b"0"),
            "new message inside a fragmented one",
        ),
        (client_frame(TEXT, b"3" * 10, long=True), "non-minimal 64-bit length"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_frames_that_break_the_rfc_are_refused_1002(server, opened, wire, why):
    raw = opened()
    assert refused(server, raw, wire)[0] == 1002, why


def test_a_64_bit_length_is_read(server, opened):
    raw = opened()
    # An Engine.IO pong with a long payload (data that it ignores),
    # then a connect that the server answers: the pong was read whole.
    pong = b"3" + b"x" * 70_000
    raw.sock.sendall(client_frame(TEXT, pong, long=True) + client_frame(TEXT, b"40"))
    assert raw.text().startswith("40{")


@pytest.mark.parametrize("fragments", [1, 4])
def test_a_message_over_max_http_buffer_size_is_refused_1009(server, opened, fragments):
    raw = opened()
    data = b"3" + b"x" * MAX_MESSAGE
    size = len(data) // fragments + 1
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    wire = b"".join(
        client_frame(TEXT if i == 0 else CONTINUATION, part, fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    )
    code, reason = refused(server, raw, wire)
    assert (code, reason) == (1009, f"message over {MAX_MESSAGE} bytes")


def read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    """The first byte (FIN, RSV, opcode), the RSV bits and the payload of
    the next frame the server sends (unmasked, as it must be)."""

    first, second = recv_exactly(sock, 2)
    assert not second & 0x80, "a server frame is never masked"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", recv_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", recv_exactly(sock, 8))
    return first & 0x0F, (first >> 4) & 0x7, recv_exactly(sock, length)


def handshake(sock: socket.socket, host: str, extra: str = "", then: bytes = b""):
    """Ask *sock*'s server for a WebSocket (with the *extra* header lines),
    sending *then* in the same write; return the answer's head."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()
        + then
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return head


def test_compression_only_from_the_threshold(server):
    """permessage-deflate, offered (as browsers do) and allowed by the
    setting: a message of 1 KiB or more comes compressed (RSV1), a small
    one as is, and the client may send compressed messages too."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        head = handshake(
            sock,
            host,
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        )
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Extensions: permessage-deflate" in head
        assert read_frame(sock)[:2] == (TEXT, 0)  # the open packet
        # A compressed connect: RSV1, deflated, without the 4-byte tail.
        deflate = zlib.compressobj(wbits=-15)
        body = deflate.compress(b"40/public,") + deflate.flush(zlib.Z_SYNC_FLUSH)
        sock.sendall(client_frame(TEXT, body[:-4], rsv=0b100))
        opcode, rsv, payload = read_frame(sock)
        assert (opcode, rsv) == (TEXT, 0)
        assert payload.startswith(b"40/public,{")
        big = "y" * 2000
        sock.sendall(client_frame(TEXT, f'42/public,1["echo","{big}"]'.encode()))
        opcode, rsv, payload = read_frame(sock)
        assert (opcode, rsv) == (TEXT, 0b100)
        assert len(payload) < len(big)
        inflate = zlib.decompressobj(wbits=-15)
        text = inflate.decompress(payload + b"\x00\x00\xff\xff").decode()
        assert text.startswith("43/public,1[") and big in text
        sock.sendall(client_frame(TEXT, b'42/public,2["echo","small"]'))
        assert read_frame(sock) == (TEXT, 0, b'43/public,2["small"]')


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
def test_server_frames_of_every_length_form_parse(length):
    from oe_web_socketio.websocket import frame
    from wsproto.frame_protocol import FrameProtocol

    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(frame(TEXT, b"x" * length))
    (received,) = parser.received_frames()
    assert received.payload == "x" * length and received.message_finished


def test_a_broadcast_packet_is_framed_once():
    from engineio import packet as eio_packet
    from oe_web_socketio.websocket import message_frame

    pkt = eio_packet.Packet(eio_packet.MESSAGE, '2/chat,["news"]')
    first = message_frame(pkt)
    assert first == b"\x81\x104" + b'2/chat,["news"]'
    assert message_frame(pkt) is first


def test_frames_sent_before_the_101_are_read(server):
    """The request's 8 KiB read buffer is released after the handshake
    (memory per idle connection, README "Benchmarks"), and what it held
    past the request is not lost: a client that sends its first frame
    with the handshake gets its answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        head = handshake(sock, host, then=client_frame(TEXT, b"40/public,"))
        assert head.startswith(b"HTTP/1.1 101 ")
        assert read_frame(sock)[:2] == (TEXT, 0)  # the open packet
        assert read_frame(sock)[2].startswith(b"40/public,{")


def test_the_request_read_buffer_is_closed_the_socket_kept():
    from types import SimpleNamespace

    from gevent import socket as gevent_socket
    from oe_web_socketio.websocket import release_request_buffer

    ours, theirs = gevent_socket.socketpair()
    with ours, theirs:
        ours.settimeout(TIMEOUT)
        rfile = ours.makefile("rb", -1)
        theirs.sendall(b"GET / HTTP/1.1\r\n\r\n\x81\x00")
        assert rfile.readline() == b"GET / HTTP/1.1\r\n"
        assert rfile.readline() == b"\r\n"
        environ = {"wsgi.input": SimpleNamespace(rfile=rfile)}
        assert release_request_buffer(environ, ours) == b"\x81\x00"
        assert rfile.closed
        # Nothing held, nothing waited for.
        assert release_request_buffer({}, ours) == b""
        ours.settimeout(TIMEOUT)
        theirs.sendall(b"more")
        assert ours.recv(10) == b"more"


def test_a_burst_past_the_cap_keeps_the_compressed_stream_whole(server, opened):
    """Broadcasts that the server queues past max_queued_bytes in one turn
    to a client that reads (the server's own backlog, let through) reach
    it whole when it compresses: a refused message is not compressed
    first (the shared zlib state would then hold it twice, and what
    follows would inflate to garbage)."""
    host, port = server.url.removeprefix("http://").split(":")
    bodies = [os.urandom(1500).hex() for _ in range(12)]
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        head = handshake(sock, host, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert b"Sec-WebSocket-Extensions: permessage-deflate" in head
        read_frame(sock)  # the open packet
        sock.sendall(
            client_frame(TEXT, b"40/public,")
            + client_frame(TEXT, b'42/public,1["subscribe","feed"]')
        )
        while read_frame(sock)[2] != b"43/public,1[true]":
            pass
        publisher = opened()
        publisher.send("40/public,")
        assert publisher.text().startswith("40/public,{")
        publisher.sock.sendall(
            b"".join(
                client_frame(
                    TEXT,
                    f'42/public,["broadcast_channel",{{"n":{n},'
                    f'"body":"{body}"}},"feed"]'.encode(),
                )
                for n, body in enumerate(bodies)
            )
        )
        inflate = zlib.decompressobj(wbits=-15)
        numbers: list[int] = []
        while len(numbers) < len(bodies):
            _opcode, rsv, payload = read_frame(sock)
            if rsv:
                payload = inflate.decompress(payload + b"\x00\x00\xff\xff")
            text = payload.decode()
            assert text.startswith("42/public,"), text[:80]
            numbers.append(json.loads(text[len("42/public,") :])[1]["n"])
        assert numbers == list(range(len(bodies)))


def test_a_compressed_message_inflating_past_the_limit_is_refused_1009(server):
    host, port = server.url.removeprefix("http://").split(":")
    deflate = zlib.compressobj(wbits=-15)
    bomb = deflate.compress(b"3" + b"0" * 10 * MAX_MESSAGE)
    bomb += deflate.flush(zlib.Z_SYNC_FLUSH)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        handshake(sock, host, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
        read_frame(sock)  # the open packet
        sock.sendall(client_frame(TEXT, bomb[:-4], rsv=0b100))
        frames = [read_frame(sock)]
        while frames[-1][0] != CLOSE:
            frames.append(read_frame(sock))
    # The Engine.IO close packet, then the close frame.
    assert [frame[0] for frame in frames] == [TEXT, CLOSE]
    reason = f"message over {MAX_MESSAGE} bytes".encode()
    assert frames[-1][2] == struct.pack("!H", 1009) + reason


def wsproto_message(wire: bytes) -> str | bytes | None:
    """The first whole message wsproto (as a server) reads in *wire*, or
    ``None``; raises ParseFailed where it refuses the frames."""
    from wsproto.frame_protocol import FrameProtocol

    parser = FrameProtocol(client=False, extensions=[])
    parser.receive_bytes(wire)
    parts = []
    for received in parser.received_frames():
        if received.opcode.iscontrol():
            return None
        parts.append(received.payload)
        if received.message_finished:
            return type(parts[0])().join(parts)
    return None


LONE = [
    client_frame(TEXT, b""),
    client_frame(TEXT, b"42/chat,"),
    client_frame(TEXT, "4é€😀".encode()),
    client_frame(BINARY, bytes(range(256))),
    client_frame(TEXT, b"3" * 125),
    client_frame(TEXT, b"3" * 126),
    client_frame(TEXT, b"3" * 1001),
    client_frame(BINARY, b"\x00" * 65535),
]

NOT_LONE = [
    client_frame(TEXT, b"3" * 65536),  # the 64-bit length form
    client_frame(TEXT, b"3" * 10, long=True),  # not minimal
    bytes((0x81, 0x80 | 126)) + struct.pack("!H", 10) + b"\0" * 4 + b"3" * 10,
    client_frame(TEXT, b"40", fin=False),
    client_frame(CONTINUATION, b"40"),
    client_frame(TEXT, b"40", rsv=0b100),
    client_frame(TEXT, b"40", masked=False),
    client_frame(PING, b"40"),
    client_frame(CLOSE, struct.pack("!H", 1000)),
    client_frame(TEXT, b"40") + client_frame(TEXT, b"41"),  # two frames
    client_frame(TEXT, b"42/chat,")[:-1],  # part of one
    client_frame(TEXT, b"3" * 300)[:7],  # part of a 16-bit header
]


@pytest.mark.parametrize("wire", LONE + NOT_LONE)
def test_the_lone_frame_fast_path_agrees_with_wsproto(wire):
    """What the fast path reads is what wsproto reads; what it does not
    take (``None``), wsproto parses."""
    from oe_web_socketio.websocket import lone_frame

    message = lone_frame(wire, MAX_MESSAGE)
    assert (message is not None) == (wire in LONE)
    if message is not None:
        assert message == wsproto_message(wire)
        assert type(message) is type(wsproto_message(wire))


@pytest.mark.parametrize(
    "payload", [b"4\xff", b"4\xc3", b"4\xed\xa0\x80", b"4\xc0\xaf"]
)
def test_the_fast_path_refuses_the_utf8_wsproto_refuses(payload):
    from oe_web_socketio.websocket import lone_frame
    from wsproto.frame_protocol import ParseFailed

    wire = client_frame(TEXT, payload)
    with pytest.raises(ParseFailed) as refused_by_wsproto:
        wsproto_message(wire)
    assert refused_by_wsproto.value.code == 1007
    with pytest.raises(UnicodeDecodeError):
        lone_frame(wire, MAX_MESSAGE)


def test_the_fast_path_leaves_a_message_over_the_limit_to_wsproto():
    from oe_web_socketio.websocket import lone_frame

    assert lone_frame(client_frame(TEXT, b"3" * 11), 10) is None
    assert lone_frame(client_frame(TEXT, b"3" * 10), 10) == "3" * 10


def test_wsproto_is_idle_only_between_messages():
    """The fast path is taken only when wsproto holds nothing (its private
    state, read by _wsproto_idle: this fails if wsproto moves it)."""
    from oe_web_socketio.websocket import _wsproto_idle
    from wsproto.frame_protocol import FrameProtocol

    parser = FrameProtocol(client=False, extensions=[])
    assert _wsproto_idle(parser)
    first = client_frame(TEXT, b"4", fin=False)
    parser.receive_bytes(first[:1])  # part of a header
    assert list(parser.received_frames()) == []
    assert not _wsproto_idle(parser)
    parser.receive_bytes(first[1:])
    assert [f.payload for f in parser.received_frames()] == ["4"]
    assert not _wsproto_idle(parser)  # a fragmented message begun
    second = client_frame(CONTINUATION, b"0" * 200, fin=False)
    parser.receive_bytes(second[:9])
    assert [f.payload for f in parser.received_frames()] == ["0"]
    assert not _wsproto_idle(parser)  # a frame begun
    parser.receive_bytes(second[9:])
    list(parser.received_frames())
    assert not _wsproto_idle(parser)  # the frame is whole, the message not
    parser.receive_bytes(client_frame(CONTINUATION, b"0"))
    assert list(parser.received_frames())[-1].message_finished
    assert _wsproto_idle(parser)


def test_a_message_split_across_reads_and_two_in_one_read(server, opened):
    """A frame whose bytes arrive in two reads, then two frames in one
    read and a ping between messages: each message answered once, in
    order (the fast path hands all of these to wsproto)."""
    raw = opened()
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    wire = client_frame(TEXT, b"40/chat,")
    raw.sock.sendall(wire[:3])
    # No condition to wait for: the server has nothing to answer yet.
    time.sleep(0.05)
    raw.sock.sendall(wire[3:])
    assert raw.text().startswith("40/chat,{")
    raw.sock.sendall(client_frame(PING, b"p") + client_frame(TEXT, b"40/public,"))
    assert raw.next_event().payload == b"p"
    assert raw.text().startswith("40/public,{")
    raw.sock.sendall(
        client_frame(TEXT, b'42/public,1["echo","a"]')
        + client_frame(TEXT, b'42/public,2["echo","b"]')
    )
    assert raw.text() == '43/public,1["a"]'
    assert raw.text() == '43/public,2["b"]'


def test_invalid_utf8_in_a_lone_frame_is_refused_1007(server, opened):
    raw = opened()
    assert refused(server, raw, client_frame(TEXT, b"4\xed\xa0\x80"))[0] == 1007


def test_a_non_minimal_16_bit_length_is_refused_1002(server, opened):
    raw = opened()
    wire = bytes((0x81, 0x80 | 126)) + struct.pack("!H", 1) + b"\0" * 4 + b"3"
    assert refused(server, raw, wire)[0] == 1002
