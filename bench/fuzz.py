"""Fuzz: malformed frames and requests of every kind against a running
server, while well-behaved clients chat.

The target is the appliance's own ``bin/oe_web_socketio`` (its
configuration, its database: the stack must run, ``bin/start``) on a free
loopback port, pinned to CPU 0. One or more sender processes, pinned to
CPU 1, open raw TCP connections and send, round-robin over the cases of
:data:`CASES`, ``--count`` malformed inputs:

* WebSocket (``/socket.io/?EIO=4&transport=websocket``, after the
  handshake, some after a Socket.IO connect): text that does not start
  with a digit, empty frames, binary garbage, bad JSON, unknown
  namespaces and packet types, packets after a close or a disconnect,
  oversize messages, bad UTF-8, and bad framing (reserved opcodes and
  bits, unmasked frames, a continuation first, fragmented or long control
  frames, absurd or truncated lengths, bytes that are no frame);
* Engine.IO polling: unknown sids, bad bodies and packets, too many
  packets, a close packet then more packets (closed sessions), two GETs
  at once, bad versions and transports, oversize and truncated bodies;
* HTTP: malformed request lines, headers and bodies, to ``/socket.io/``,
  ``/<db>/bus``, ``/longpolling/…``, ``/oe_web_socketio/`` (static) and
  ``/health``.

Most inputs take a connection of their own. Two cases send bursts of
:data:`BURST`: malformed events on one connected WebSocket (a refused
event leaves the session open) and malformed requests pipelined on one
kept-alive connection; a burst counts the inputs the server answered.

Meanwhile ``--clients`` python-socketio clients (half WebSocket, half
polling) connected to ``/chat`` as the appliance's admin say a numbered
line every ``--interval`` seconds in one room, and each counts the lines
it receives.

Figures: inputs sent and their outcomes (per case with ``--cases``, and
in ``outcomes.json`` beside the server's log), tracebacks and error lines
in the server's log, 5xx answers seen by the senders (an HTTP status, or
HTTP bytes written into a WebSocket; ``503``, the documented answer of a
server out of database cursors or sessions, apart), inputs left
unanswered (a WebSocket neither closed nor answered within
:data:`ANSWER_TIMEOUT`), the log's growth, the server's RSS before, at
most during, and after (once the garbage sessions are gone), sessions
left over, and the good clients' lines lost and disconnections. Nothing
asserts on them. A loaded machine makes the server slower to answer:
compare runs made side by side.

Usage: bin/python bench/fuzz.py --count 100000
       bin/python bench/fuzz.py --count 100000 --tree 6c8215e  # older code
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import socketio  # noqa: E402
from engineio import payload as eio_payload  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bus_polls import login, rpc, trytond_port  # noqa: E402
from common import (  # noqa: E402
    ROOT,
    cpu_seconds,
    die_with_parent,
    egg_launcher,
    free_port,
    own_cpu_seconds,
    raise_nofile_limit,
    rss_bytes,
    stop,
    wait_accepting,
    watchdog,
)

#: The chat namespace and room of the good clients.
NAMESPACE = "/chat"
ROOM = "room-fuzz"
#: Seconds a WebSocket waits for the server to answer a frame: a close,
#: an error packet. Past it the WebSocket counts as left open.
ANSWER_TIMEOUT = 3.0
#: Seconds an HTTP request waits for its answer, the server loaded.
HTTP_TIMEOUT = 30.0
#: Seconds an input may take in all, connections included.
INPUT_TIMEOUT = 40.0
#: The server's max_http_buffer_size (the appliance keeps the default).
MAX_MESSAGE = 1_000_000
#: An oversize input every this many inputs of its case's turn.
OVERSIZE_EVERY = 50
#: Seconds the good clients have to receive the last lines.
DRAIN_SECONDS = 5.0
#: Seconds to wait for the garbage sessions to end after the last input.
SETTLE_TIMEOUT = 90.0

# --- raw HTTP and WebSocket


class Peer:
    """One raw TCP connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = ANSWER_TIMEOUT) -> bytes | None:
        """Some bytes, ``b""`` at EOF, ``None`` if none came in time."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def close(self) -> None:
        self.sock.close()


def request(
    path: str,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    port: int = 0,
) -> bytes:
    """An HTTP/1.1 request that asks the server to close the connection."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    fields = {"Connection": "close", **(headers or {})}
    if body or method == "POST":
        fields.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def status_of(answer: bytes | None) -> str:
    """``"200"``… of an HTTP answer, ``"eof"`` for none, ``"silent"`` for
    no answer in time."""
    if answer is None:
        return "silent"
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    if match:
        return match.group(1).decode()
    return "eof" if not answer else "not-http"


def exchange(port: int, raw: bytes, half_close: bool = False) -> str:
    """Send *raw* on a new connection; the status of the answer."""
    peer = Peer(port)
    try:
        peer.send(raw)
        if half_close:
            peer.sock.shutdown(socket.SHUT_WR)
        return status_of(read_answer(peer))
    finally:
        peer.close()


def read_answer(peer: Peer) -> bytes | None:
    """The first bytes of an answer (its status line at least)."""
    data = b""
    while b"\r\n" not in data:
        chunk = peer.recv(HTTP_TIMEOUT)
        if chunk is None:
            return data or None
        if not chunk:
            return data
        data += chunk
    return data


def frame(
    payload: bytes,
    opcode: int = 1,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """A client WebSocket frame (masked with a zero key unless *mask* is
    false: XOR with zeros, the payload unchanged); *length* lies about the
    payload's length."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + size.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if mask else b"") + payload


def text(data: str | bytes) -> bytes:
    return frame(data.encode() if isinstance(data, str) else data)


class WebSocket(Peer):
    """A raw WebSocket to Engine.IO: the handshake done, the open packet
    read."""

    def __init__(self, port: int, connect: bool = False) -> None:
        super().__init__(port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.send(
            request(
                "/socket.io/?EIO=4&transport=websocket",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Key": key,
                    "Sec-WebSocket-Version": "13",
                },
                port=port,
            )
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.recv(INPUT_TIMEOUT)
            if not chunk:
                raise ConnectionError(f"no handshake answer: {head[:60]!r}")
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head[:60]!r}")
        if not self.read_frame(INPUT_TIMEOUT)[1].startswith(b"0"):
            raise ConnectionError("no Engine.IO open packet")
        if connect:
            self.send(text("40"))
            if not self.read_frame(INPUT_TIMEOUT)[1].startswith(b"40"):
                raise ConnectionError("no Socket.IO connection")

    def _fill(self, size: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < size:
            chunk = self.recv(max(0.01, deadline - time.monotonic()))
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_frame(self, timeout: float = ANSWER_TIMEOUT) -> tuple[int, bytes]:
        """The next server frame as ``(opcode, payload)``; opcode ``-1``
        at EOF or after *timeout*, ``-2`` for bytes that are no frame
        (HTTP written into the WebSocket: the payload holds them)."""
        deadline = time.monotonic() + timeout

        def fill(size: int) -> bool:
            return self._fill(size, max(0.0, deadline - time.monotonic()))

        if fill(1) and self.buffer.startswith(b"HTTP/"):
            self._fill(64, 0.2)
            return -2, self.buffer
        if not fill(2):
            return -1, b""
        first, second = self.buffer[0], self.buffer[1] & 0x7F
        offset = 2
        if second == 126:
            if not fill(4):
                return -1, b""
            second, offset = int.from_bytes(self.buffer[2:4], "big"), 4
        elif second == 127:
            if not fill(10):
                return -1, b""
            second, offset = int.from_bytes(self.buffer[2:10], "big"), 10
        if not fill(offset + second):
            return -1, b""
        payload = self.buffer[offset : offset + second]
        self.buffer = self.buffer[offset + second :]
        return first & 0x0F, payload

    def outcome(self) -> str:
        """How the server answered what was sent: ``close:<code>``,
        ``eof``, ``open`` (still open after the answer timeout),
        ``http:<status>`` (HTTP inside the WebSocket); ``error`` when a
        Socket.IO error (or connect_error) packet came and the session
        stays (a refused event), ``…+error`` when it came first."""
        seen_error = ""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return seen_error.lstrip("+") or "open"
            opcode, payload = self.read_frame(remaining)
            if opcode == -2:
                return f"http:{status_of(payload)}" + seen_error
            if opcode == -1:
                if time.monotonic() < deadline - 0.01:
                    return "eof" + seen_error
                return seen_error.lstrip("+") or "open"
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                return f"close:{code}" + seen_error
            if opcode == 1 and (
                payload.startswith(b"44") or b'"error"' in payload[:40]
            ):
                seen_error = "+error"
                # A close, if one comes, follows at once.
                deadline = min(deadline, time.monotonic() + 0.3)


# --- the cases: each sends one malformed input, returns its outcome

Case = Callable[[int, random.Random, dict], str]


def ws_case(payload: Callable[[random.Random], bytes], connect: bool = False) -> Case:
    """Send the frame(s) *payload* builds on a fresh WebSocket."""

    def run(port: int, rng: random.Random, context: dict) -> str:
        ws = WebSocket(port, connect=connect)
        try:
            ws.send(payload(rng))
            return ws.outcome()
        finally:
            ws.close()

    return run


#: Malformed events a connected socket is refused one by one, the session
#: kept: a burst sends many of them on one WebSocket.
BAD_EVENTS = (
    '42["message",',
    '42"x"',
    "42{}",
    "42[]",
    "42[1]",
    '42["no_such_event","x"]',
    '42/nowhere,["message","x"]',
    '431["x"]',
    "42[" * 50,
)

#: Malformed frames per WebSocket burst, and requests per HTTP burst.
BURST = 50


def ws_burst(port: int, rng: random.Random, context: dict) -> tuple[str, int]:
    """BURST malformed events on one connected WebSocket; the outcome
    counts the error packets that came back, then how the socket ended."""
    ws = WebSocket(port, connect=True)
    try:
        ws.send(b"".join(text(rng.choice(BAD_EVENTS)) for _ in range(BURST)))
        errors = 0
        end = "open"
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            opcode, payload = ws.read_frame(deadline - time.monotonic())
            if opcode == 1 and b'"error"' in payload[:40]:
                errors += 1
                deadline = time.monotonic() + ANSWER_TIMEOUT
            elif opcode == 8:
                end = "close"
                break
            elif opcode == -2:
                end = f"http:{status_of(payload)}"
                break
            elif opcode == -1:
                end = "eof" if time.monotonic() < deadline - 0.01 else "open"
                break
        return f"errors:{min(errors, BURST) // 10 * 10}+/{end}", BURST
    finally:
        ws.close()


def http_burst(port: int, rng: random.Random, context: dict) -> tuple[str, int]:
    """BURST malformed requests pipelined on one kept-alive connection;
    the outcome lists the statuses that came back."""
    keep = {"Connection": "keep-alive"}
    database = context["database"]
    choices = [
        lambda: request("/longpolling/no/such/route", headers=keep, port=port),
        lambda: request("/health", "POST", junk(rng), keep, port),
        lambda: request(f"/{database}/bus", "POST", b"{}", keep, port),
        lambda: request("/no-such-db/bus", "POST", b"{}", keep, port),
        lambda: request("/oe_web_socketio/%00", headers=keep, port=port),
        lambda: request(poll_path(printable(rng, 20, 20)), "POST", b"40", keep, port),
        lambda: request("/socket.io/?EIO=7", headers=keep, port=port),
        lambda: request("/longpolling/example/whoami", headers=keep, port=port),
    ]
    raw = b"".join(rng.choice(choices)() for _ in range(BURST - 1))
    raw += request("/health", "DELETE", port=port)  # Connection: close
    peer = Peer(port)
    try:
        peer.send(raw)
        data = b""
        while True:
            chunk = peer.recv(HTTP_TIMEOUT)
            if not chunk:
                break
            data += chunk
    finally:
        peer.close()
    statuses = collections.Counter(
        match.decode() for match in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)
    )
    # The server may close the connection after an error: the requests
    # behind it were never read, and do not count.
    answered = sum(statuses.values())
    return ",".join(sorted(statuses)), answered


def ws_truncated(port: int, rng: random.Random, context: dict) -> str:
    """A frame that announces 100 bytes, 10 sent, then the client leaves."""
    ws = WebSocket(port)
    ws.send(frame(b'42["messa', length=100))
    ws.close()
    return "sent"


def handshake(port: int) -> str:
    """A new polling session's sid."""
    peer = Peer(port)
    try:
        peer.send(request("/socket.io/?EIO=4&transport=polling", port=port))
        data = b""
        while b'"sid"' not in data or b"}" not in data.rpartition(b'"sid"')[2]:
            chunk = peer.recv(INPUT_TIMEOUT)
            if not chunk:
                raise ConnectionError(f"no polling handshake: {data[:80]!r}")
            data += chunk
    finally:
        peer.close()
    return re.search(rb'"sid":"([^"]+)"', data).group(1).decode()


def poll_path(sid: str) -> str:
    return f"/socket.io/?EIO=4&transport=polling&sid={sid}"


def poll_case(body: Callable[[random.Random], bytes], connect: bool = False) -> Case:
    """POST the body *body* builds to a fresh polling session."""

    def run(port: int, rng: random.Random, context: dict) -> str:
        sid = handshake(port)
        if connect:
            exchange(port, request(poll_path(sid), "POST", b"40", port=port))
        return exchange(port, request(poll_path(sid), "POST", body(rng), port=port))

    return run


def poll_closed(port: int, rng: random.Random, context: dict) -> str:
    """A close packet (alone or in a batch), then packets on the closed
    session: the statuses of the packets after the close."""
    sid = handshake(port)
    close = rng.choice([b"1", b"40\x1e1", b"1\x1e40"])
    first = exchange(port, request(poll_path(sid), "POST", close, port=port))
    after = [
        exchange(port, request(poll_path(sid), "POST", body, port=port))
        for body in (b"40", b'42["message","x"]')
    ]
    return "/".join([first, *after])


def poll_two_gets(port: int, rng: random.Random, context: dict) -> str:
    """Two GETs at once on one session."""
    sid = handshake(port)
    exchange(port, request(poll_path(sid), "POST", b"40", port=port))
    # Drain the connect answer, then two held polls.
    exchange(port, request(poll_path(sid), port=port))
    jobs = [
        gevent.spawn(exchange, port, request(poll_path(sid), port=port))
        for _ in range(2)
    ]
    gevent.joinall(jobs, timeout=INPUT_TIMEOUT)
    return "/".join(sorted(str(job.value) for job in jobs))


def poll_truncated(port: int, rng: random.Random, context: dict) -> str:
    """A POST whose body stops short of its Content-Length."""
    sid = handshake(port)
    raw = request(poll_path(sid), "POST", b"42", {"Content-Length": "100"}, port)
    return exchange(port, raw, half_close=True)


def http_case(
    build: Callable[[random.Random, dict], bytes], half_close: bool = False
) -> Case:
    def run(port: int, rng: random.Random, context: dict) -> str:
        return exchange(port, build(rng, {**context, "port": port}), half_close)

    return run


def junk(rng: random.Random, low: int = 1, high: int = 64) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(low, high)))


def printable(rng: random.Random, low: int = 1, high: int = 32) -> str:
    return "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(low, high)))


def bus(rng, ctx, body: bytes, headers=None, database=None) -> bytes:
    fields = {"Content-Type": "application/json", **(headers or {})}
    return request(
        f"/{database or ctx['database']}/bus", "POST", body, fields, ctx["port"]
    )


def session_header(ctx) -> dict[str, str]:
    return {"Authorization": f"Session {ctx['session']}"}


def bad_session(rng) -> str:
    return base64.b64encode(f"admin:1:{os.urandom(32).hex()}".encode()).decode()


CASES: dict[str, Case] = {
    # Engine.IO / Socket.IO over WebSocket.
    "ws-text-not-digit": ws_case(lambda rng: text(";" + printable(rng))),
    "ws-empty": ws_case(lambda rng: text(b"")),
    "ws-binary": ws_case(lambda rng: frame(junk(rng), opcode=2)),
    "ws-bad-json-event": ws_case(
        lambda rng: text(rng.choice(['42["message",', '42{"a":', "42[1", '42"x'])),
        connect=True,
    ),
    "ws-bad-json-connect": ws_case(
        lambda rng: text(rng.choice(['40{"session":', "40[", "40/chat,{"]))
    ),
    "ws-event-not-array": ws_case(
        lambda rng: text(rng.choice(['42"x"', "42{}", "42[]", "42[1]", "42null"])),
        connect=True,
    ),
    "ws-unknown-namespace": ws_case(
        lambda rng: text(f"40/{printable(rng).replace(',', '')},")
    ),
    "ws-event-unconnected-namespace": ws_case(
        lambda rng: text('42/nowhere,["message","x"]'), connect=True
    ),
    "ws-unknown-packet-type": ws_case(
        lambda rng: text(rng.choice(["49", "4x", "7", "9abc", "5", "6", "8"]))
    ),
    "ws-bad-ack": ws_case(
        lambda rng: text(rng.choice(["43", "43x", '431["x"]', "43[]", "431"])),
        connect=True,
    ),
    "ws-binary-attachments": ws_case(
        lambda rng: (
            text(
                rng.choice(
                    [
                        '451-["message",{"_placeholder":true,"num":0}]',
                        '45x-["message"]',
                        '4599999999-["message"]',
                        '451-["message",{"_placeholder":true,"num":7}]',
                    ]
                )
            )
            + frame(junk(rng), opcode=2)
        ),
        connect=True,
    ),
    "ws-bad-utf8": ws_case(
        lambda rng: text(b'42["message","\xff\xfe' + junk(rng, 1, 8) + b'"]'),
        connect=True,
    ),
    "ws-after-close-packet": ws_case(lambda rng: text("1") + text("40")),
    "ws-after-disconnect": ws_case(
        lambda rng: text("41") + text('42["message","x"]'), connect=True
    ),
    "ws-upgrade-again": ws_case(lambda rng: text("2probe") + text("5")),
    "ws-client-ping": ws_case(lambda rng: text("2") + text("2") + text("1")),
    "ws-oversize": ws_case(
        lambda rng: text(b'42["message","' + b"x" * MAX_MESSAGE + b'"]'),
        connect=True,
    ),
    "ws-burst-bad-events": ws_burst,
    # WebSocket framing.
    "ws-rsv-bits": ws_case(lambda rng: frame(b"40", rsv=rng.choice([1, 2, 4, 7]))),
    "ws-reserved-opcode": ws_case(
        lambda rng: frame(b"40", opcode=rng.choice([3, 4, 5, 6, 7, 11, 12, 15]))
    ),
    "ws-unmasked": ws_case(lambda rng: frame(b"40", mask=False)),
    "ws-continuation-first": ws_case(lambda rng: frame(b"40", opcode=0)),
    "ws-fragmented-control": ws_case(lambda rng: frame(b"x", opcode=9, fin=False)),
    "ws-long-control": ws_case(lambda rng: frame(b"x" * 200, opcode=9)),
    "ws-bad-close-frame": ws_case(
        lambda rng: frame(rng.choice([b"\x00", b"\x03\xe8\xff\xfe", b"\x00\x05"]), 8)
    ),
    "ws-absurd-length": ws_case(lambda rng: frame(b"", length=(1 << 63) - 1)),
    "ws-no-frame": ws_case(lambda rng: b"\r\n" + junk(rng, 16, 128)),
    "ws-truncated": ws_truncated,
    # Engine.IO polling.
    "poll-unknown-sid-get": http_case(
        lambda rng, ctx: request(poll_path(printable(rng, 8, 20)), port=ctx["port"])
    ),
    "poll-unknown-sid-post": http_case(
        lambda rng, ctx: request(
            poll_path(base64.urlsafe_b64encode(os.urandom(15)).decode()),
            "POST",
            b"40",
            port=ctx["port"],
        )
    ),
    "poll-bad-body": poll_case(junk),
    "poll-empty-body": poll_case(lambda rng: b""),
    "poll-separators": poll_case(lambda rng: b"\x1e" * rng.randint(1, 5)),
    "poll-bad-base64": poll_case(lambda rng: b"b" + printable(rng).encode()),
    "poll-too-many-packets": poll_case(lambda rng: b"\x1e".join([b"3"] * 40)),
    "poll-bad-packets": poll_case(
        lambda rng: rng.choice([b";x", b"42[", b"4x", b"9", b"40{", b"42/x,[1]"]),
        connect=True,
    ),
    "poll-closed-session": poll_closed,
    "poll-two-gets": poll_two_gets,
    "poll-truncated": poll_truncated,
    "poll-oversize": poll_case(lambda rng: b"4" * (MAX_MESSAGE + 10)),
    "poll-bad-query": http_case(
        lambda rng, ctx: request(
            rng.choice(
                [
                    "/socket.io/?EIO=9&transport=polling",
                    "/socket.io/?EIO=x&transport=polling",
                    "/socket.io/?EIO=4&transport=carrier-pigeon",
                    "/socket.io/",
                    "/socket.io/?EIO=4&transport=polling&sid=%ZZ&b64=%FF",
                    "/socket.io/?EIO=4&transport=polling&j=alert(1)",
                ]
            ),
            port=ctx["port"],
        )
    ),
    # HTTP to /socket.io/.
    "http-socketio-method": http_case(
        lambda rng, ctx: request(
            "/socket.io/?EIO=4&transport=polling",
            rng.choice(["PUT", "DELETE", "PATCH", "TRACE", "FOO"]),
            port=ctx["port"],
        )
    ),
    "http-websocket-bad-handshake": http_case(
        lambda rng, ctx: request(
            "/socket.io/?EIO=4&transport=websocket",
            headers=rng.choice(
                [
                    {"Upgrade": "websocket", "Connection": "Upgrade"},
                    {
                        "Upgrade": "websocket",
                        "Connection": "Upgrade",
                        "Sec-WebSocket-Key": "x",
                        "Sec-WebSocket-Version": "8",
                    },
                    {"Upgrade": "h2c", "Connection": "Upgrade"},
                ]
            ),
            port=ctx["port"],
        )
    ),
    # Tryton's bus.
    "bus-not-json": http_case(
        lambda rng, ctx: bus(rng, ctx, junk(rng), session_header(ctx))
    ),
    "bus-bad-shape": http_case(
        lambda rng, ctx: bus(
            rng,
            ctx,
            rng.choice(
                [
                    b"[]",
                    b'"x"',
                    b'{"channels": "x"}',
                    b'{"channels": [1, 2]}',
                    b'{"channels": {"a": 1}}',
                    json.dumps({"channels": ["c"] * 5000}).encode(),
                    b'{"channels": [], "last_message": ',
                    b"[" * 100_000,
                ]
            ),
            session_header(ctx),
        )
    ),
    "bus-bad-session": http_case(
        lambda rng, ctx: bus(
            rng,
            ctx,
            b'{"channels": []}',
            rng.choice(
                [
                    {"Authorization": f"Session {bad_session(rng)}"},
                    {"Authorization": f"Session {printable(rng)}"},
                    {"Authorization": printable(rng)},
                    {"Cookie": f"tryton_session={printable(rng)}"},
                    {},
                ]
            ),
        )
    ),
    "bus-bad-request": http_case(
        lambda rng, ctx: rng.choice(
            [
                bus(rng, ctx, b"{}", session_header(ctx), database="no-such-db"),
                bus(rng, ctx, b"{}", {**session_header(ctx), "Content-Type": "x"}),
                bus(rng, ctx, b"\x1f\x8b", {"Content-Encoding": "gzip"}),
                request(f"/{ctx['database']}/bus", port=ctx["port"]),
                bus(rng, ctx, b"{}", {"Origin": "https://evil.example.org"}),
            ]
        )
    ),
    # Long-polling routes.
    "longpolling-bad-session": http_case(
        lambda rng, ctx: request(
            "/longpolling/example/whoami",
            headers=rng.choice(
                [
                    {"Authorization": f"Session {bad_session(rng)}"},
                    {"Authorization": f"Session {printable(rng)}"},
                    {"Cookie": f"tryton_session={printable(rng)}"},
                    {"X-Tryton-Database": printable(rng)},
                ]
            ),
            port=ctx["port"],
        )
    ),
    "longpolling-bad-request": http_case(
        lambda rng, ctx: rng.choice(
            [
                request("/longpolling/example/hello/%FF%FE%00", port=ctx["port"]),
                request("/longpolling/no/such/route", port=ctx["port"]),
                request("/longpolling/example/hello/x?a=1&a=2", port=ctx["port"]),
                request(
                    "/longpolling/example/whoami",
                    "POST",
                    junk(rng),
                    {"Content-Type": "application/json", **session_header(ctx)},
                    ctx["port"],
                ),
                request(
                    "/longpolling/example/whoami?unexpected=1",
                    headers=session_header(ctx),
                    port=ctx["port"],
                ),
                request(
                    "/longpolling/example/hello/x",
                    "POST",
                    b"%%%=&&=",
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    ctx["port"],
                ),
            ]
        )
    ),
    # Static files and /health.
    "static-bad-path": http_case(
        lambda rng, ctx: request(
            rng.choice(
                [
                    "/oe_web_socketio/../../etc/passwd",
                    "/oe_web_socketio/%2e%2e/%2e%2e/etc/passwd",
                    "/oe_web_socketio/%00",
                    "/oe_web_socketio/" + "a" * 5000,
                    "/oe_web_socketio/oe_web_socketio.js%FF",
                ]
            ),
            port=ctx["port"],
        )
    ),
    "static-bad-headers": http_case(
        lambda rng, ctx: request(
            "/oe_web_socketio/oe_web_socketio.js",
            rng.choice(["GET", "HEAD", "POST"]),
            headers=rng.choice(
                [
                    {"Range": "bytes=" + printable(rng)},
                    {"If-None-Match": printable(rng)},
                    {"If-Modified-Since": printable(rng)},
                    {"Accept-Encoding": printable(rng)},
                ]
            ),
            port=ctx["port"],
        )
    ),
    "health-bad": http_case(
        lambda rng, ctx: request(
            rng.choice(["/health?x=%ZZ", "/health/" + printable(rng), "/health"]),
            rng.choice(["POST", "PUT", "GET"]),
            junk(rng),
            port=ctx["port"],
        )
    ),
    "http-burst": http_burst,
    # Malformed HTTP.
    "http-bad-request-line": http_case(
        lambda rng, ctx: rng.choice(
            [
                junk(rng) + b"\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET " + b"/" * 70_000 + b" HTTP/1.1\r\n\r\n",
            ]
        )
    ),
    "http-bad-headers": http_case(
        lambda rng, ctx: rng.choice(
            [
                b"GET /health HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n",
                b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
                b"POST /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"POST /health HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                (
                    b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n"
                ),
                b"GET /health HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
            ]
        ),
        half_close=True,
    ),
}

#: Cases that send a megabyte: every OVERSIZE_EVERY-th turn only.
OVERSIZE = {"ws-oversize", "poll-oversize"}


# --- the sender process


def run_sender(args: argparse.Namespace) -> None:
    """Send ``args.count`` inputs; print their outcomes as JSON."""
    context = {"database": args.database, "session": args.session}
    rng = random.Random(args.seed)
    outcomes: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter
    )
    names = list(CASES)
    pool = gevent.pool.Pool(args.concurrency)
    deadline = time.monotonic() + args.deadline

    durations: collections.Counter = collections.Counter()
    delivered, pending = [0], [0]

    def one(name: str, seed: int) -> None:
        begun = time.monotonic()
        expected = BURST if CASES[name] in (ws_burst, http_burst) else 1
        pending[0] += expected
        count = 1
        try:
            with gevent.Timeout(INPUT_TIMEOUT):
                outcome = CASES[name](args.port, random.Random(seed), context)
            if isinstance(outcome, tuple):
                outcome, count = outcome
        except gevent.Timeout:
            outcome = "sender-timeout"
        except (OSError, ConnectionError) as exc:
            outcome = f"sender-error:{type(exc).__name__}"
        outcomes[name][outcome] += count
        durations[name] += time.monotonic() - begun
        pending[0] -= expected
        delivered[0] += count

    turn = 0
    # Inputs the server got, and those of the inputs under way (a burst
    # may deliver fewer than it sends): stop once they make the count.
    while time.monotonic() < deadline:
        if delivered[0] >= args.count:
            break
        if delivered[0] + pending[0] >= args.count:
            gevent.sleep(0.05)
            continue
        name = names[turn % len(names)]
        turn += 1
        if name in OVERSIZE and (turn // len(names)) % OVERSIZE_EVERY:
            continue
        pool.spawn(one, name, rng.getrandbits(32))
    pool.join(timeout=INPUT_TIMEOUT * 2)
    pool.kill()
    if args.durations:
        for name, total in durations.most_common(12):
            print(f"{name} {total:.0f} s in all", file=sys.stderr)
        print(f"sender cpu {own_cpu_seconds():.1f} s", file=sys.stderr)
    print(json.dumps({name: dict(counter) for name, counter in outcomes.items()}))


# --- the good clients


class Chatter:
    """A well-behaved client: says numbered lines, counts what it hears."""

    def __init__(self, url: str, session: str, transport: str, index: int) -> None:
        self.name = f"c{index}"
        self.heard: set[str] = set()
        self.said: list[str] = []
        self.disconnects = 0
        self.client = socketio.Client(reconnection=False)
        self.client.on("message", self._message, namespace=NAMESPACE)
        self.client.on("disconnect", self._disconnect, namespace=NAMESPACE)
        self.client.connect(
            url,
            namespaces=[NAMESPACE],
            transports=[transport],
            auth={"session": session},
            wait_timeout=30,
        )
        if (
            self.client.call("subscribe", ROOM, namespace=NAMESPACE, timeout=30)
            is not True
        ):
            raise SystemExit(f"{self.name} cannot join {ROOM}")

    def _message(self, line, channel=None, *rest) -> None:
        if isinstance(line, dict) and line.get("type") == "say":
            self.heard.add(line["text"])

    def _disconnect(self, *args) -> None:
        self.disconnects += 1

    def say(self, number: int) -> None:
        line = f"{self.name}:{number}"
        self.client.emit("message", (line, ROOM), namespace=NAMESPACE)
        self.said.append(line)


def lift_client_packet_limit() -> None:
    """Let the polling good clients read any number of packets per poll:
    python-engineio's client, like its server, refuses a payload of more
    than 16 packets and stops reading, which a busy room reaches."""
    eio_payload.Payload.max_decode_packets = 1_000_000


def chat(chatters: list[Chatter], interval: float, running: list[bool]) -> None:
    number = 0
    while running[0]:
        for chatter in chatters:
            if chatter.client.connected:
                # A client disconnected meanwhile: counted by its handler.
                with contextlib.suppress(socketio.exceptions.SocketIOError):
                    chatter.say(number)
        number += 1
        gevent.sleep(interval)


# --- the run


def server_log_figures(log: Path) -> dict[str, int]:
    text_ = log.read_text(errors="replace")
    return {
        "tracebacks": text_.count("Traceback (most recent call last)"),
        "error_lines": len(
            re.findall(r"^\S+ \S+ (ERROR|CRITICAL) ", text_, re.MULTILINE)
        ),
        "warning_lines": len(re.findall(r"^\S+ \S+ WARNING ", text_, re.MULTILINE)),
        "access_5xx": len(re.findall(r'HTTP/1\.[01]" 5\d\d ', text_)),
        "log_bytes": log.stat().st_size,
    }


def health(port: int) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        return json.load(r)


def start_senders(args, port: int, session: str) -> list[subprocess.Popen]:
    sizes = [args.count // args.senders] * args.senders
    sizes[0] += args.count - sum(sizes)
    return [
        subprocess.Popen(
            [
                *(["taskset", "-c", args.sender_cpu] if args.sender_cpu else []),
                sys.executable,
                __file__,
                "--sender",
                "--port",
                str(port),
                "--database",
                args.database,
                "--session",
                session,
                "--count",
                str(size),
                "--concurrency",
                str(args.concurrency),
                "--seed",
                str(args.seed + index),
                "--deadline",
                str(args.deadline),
                *(["--durations"] if args.durations else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads
        )
        for index, size in enumerate(sizes)
    ]


def run(args: argparse.Namespace) -> dict:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir=ROOT / "var"))
    log = workdir / "oe_web_socketio.log"
    command, _sources = egg_launcher(args.tree, workdir)
    env = dict(os.environ)
    env.pop("TRYTOND_CONFIG", None)
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                *(["taskset", "-c", args.server_cpu] if args.server_cpu else []),
                str(command),
                "-p",
                str(port),
                "-d",
                args.database,
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads
        )
    trytond = trytond_port()
    session = login(trytond, args.database)
    chatters: list[Chatter] = []
    try:
        wait_accepting(server, port, 60, f"oe_web_socketio (log: {log})")
        url = f"http://127.0.0.1:{port}"
        lift_client_packet_limit()
        chatters = [
            Chatter(url, session, "websocket" if i % 2 == 0 else "polling", i)
            for i in range(args.clients)
        ]
        gevent.sleep(2)
        before = server_log_figures(log)
        rss_before = rss_bytes(server.pid)
        running = [True]
        talker = gevent.spawn(chat, chatters, args.interval, running)
        peak = [rss_before]

        def sample() -> None:
            while True:
                peak[0] = max(peak[0], rss_bytes(server.pid))
                gevent.sleep(1)

        sampler = gevent.spawn(sample)
        started = time.monotonic()
        cpu_before = cpu_seconds(server.pid)
        senders = start_senders(args, port, session)
        outcomes: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter
        )
        for sender in senders:
            out, _ = sender.communicate()
            if sender.returncode:
                raise SystemExit(f"a sender failed ({sender.returncode})")
            for name, counts in json.loads(out.strip().splitlines()[-1]).items():
                outcomes[name].update(counts)
        elapsed = time.monotonic() - started
        server_cpu = cpu_seconds(server.pid) - cpu_before
        running[0] = False
        talker.join()
        gevent.sleep(DRAIN_SECONDS)
        expected = {line for chatter in chatters for line in chatter.said}
        lost = sum(len(expected - chatter.heard) for chatter in chatters)
        # The garbage sessions end: wait (bounded) until only ours remain.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        clients = health(port)["clients"]
        while clients > args.clients and time.monotonic() < deadline:
            gevent.sleep(1)
            clients = health(port)["clients"]
        settle = time.monotonic() - started - elapsed
        sampler.kill()
        rss_after = rss_bytes(server.pid)
        after = server_log_figures(log)
        inputs = sum(sum(counter.values()) for counter in outcomes.values())

        def total(pattern: str) -> int:
            return sum(
                count
                for counter in outcomes.values()
                for outcome, count in counter.items()
                if re.search(pattern, outcome)
            )

        (workdir / "outcomes.json").write_text(json.dumps(outcomes, indent=1))
        return {
            "inputs": inputs,
            "seconds": round(elapsed, 1),
            "inputs_per_s": round(inputs / elapsed),
            "server_cpu_%": round(100 * server_cpu / elapsed),
            # 503 (with Retry-After) is the documented answer of a server
            # out of database cursors or sessions: counted apart.
            "5xx_seen": total(r"(^|[/:,])5(?!03)\d\d"),
            "503_seen": total(r"(^|[/:,])503"),
            "http_in_websocket": total(r"http:"),
            "unanswered": total(r"^(open|silent)$|^errors:0\+/open"),
            "tracebacks": after["tracebacks"] - before["tracebacks"],
            "error_lines": after["error_lines"] - before["error_lines"],
            "access_5xx": after["access_5xx"] - before["access_5xx"],
            "log_MiB": round((after["log_bytes"] - before["log_bytes"]) / 2**20, 1),
            "rss_before_MiB": round(rss_before / 2**20, 1),
            "rss_peak_MiB": round(peak[0] / 2**20, 1),
            "rss_after_MiB": round(rss_after / 2**20, 1),
            "sessions_left": clients - args.clients,
            "settle_s": round(settle, 1),
            "lines_said": len(expected),
            "lines_lost": lost,
            "good_disconnects": sum(chatter.disconnects for chatter in chatters),
            "outcomes": {name: dict(counter) for name, counter in outcomes.items()},
            "log": str(log),
        }
    finally:
        for chatter in chatters:
            gevent.spawn(chatter.client.disconnect)
        gevent.sleep(1)
        rpc(trytond, args.database, "common.db.logout", [], session=session)
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs to send")
    parser.add_argument("--database", default="oe")
    parser.add_argument("--clients", type=int, default=20, help="good clients")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between their lines"
    )
    parser.add_argument("--senders", type=int, default=1, help="sender processes")
    parser.add_argument(
        "--concurrency", type=int, default=200, help="inputs at once per sender"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--deadline", type=float, default=1200, help="seconds of sending at most"
    )
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list")
    parser.add_argument("--sender-cpu", default="1", help="taskset CPU list")
    parser.add_argument(
        "--tree",
        metavar="COMMIT",
        help="serve the egg's code of this commit (default: the checkout's)",
    )
    parser.add_argument("--cases", action="store_true", help="outcomes per case")
    parser.add_argument(
        "--durations", action="store_true", help="senders: slowest cases, stderr"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--session", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile_limit()
    if args.sender:
        run_sender(args)
        return
    watchdog(args.deadline + SETTLE_TIMEOUT + 300)
    row = run(args)
    if args.json:
        print(json.dumps(row, indent=1))
        return
    outcomes = row.pop("outcomes")
    log = row.pop("log")
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(str(value) for value in row.values()) + " |")
    print(f"\nserver log: {log}")
    if args.cases:
        for name, counts in outcomes.items():
            shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"  {name}: {shown}")


if __name__ == "__main__":
    main()
