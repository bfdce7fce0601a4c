"""Malformed HTTP against the real gevent server of :mod:`oe_web_socketio.server`
serving the plain routes (``/health``, the static files, a route that
reads its body), sent on raw sockets: whatever gevent or a route refuses
is a ``4xx`` with a JSON body saying why, one log line, and no traceback
(gevent prints some to stderr itself, so stderr is checked too).

The Socket.IO layer (handshakes, packets) is tested in ``test_server.py``
and ``test_protocol.py``; the bus and long-polling parsers in
``test_bus.py``, ``test_longpolling.py`` and ``test_fuzz_http.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest
from oe_web_socketio.app import Application
from oe_web_socketio.config import Config
from oe_web_socketio.health import health_route
from oe_web_socketio.routing import Request, Response, Route, Router
from oe_web_socketio.server import Server, malformed_reason

pytestmark = pytest.mark.timeout(30)


def echo_body(request: Request) -> Response:
    return Response.json({"length": len(request.body(1000))})


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    router = Router(
        [
            health_route(version="t", databases=(), count_clients=lambda: 0),
            Route("/echo", echo_body, frozenset({"POST"})),
        ]
    )
    server = Server(("127.0.0.1", 0), router)
    server.start()
    yield server
    server.stop(timeout=1)


def exchange(server: Server, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send *data*, read the answer until the server closes; return the
    status, headers and body."""
    sock = gevent.socket.create_connection(server.address[:2], timeout=5)
    chunks = []
    try:
        with gevent.Timeout(5):
            sock.sendall(data)
            sock.shutdown(gevent.socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def logged(caplog) -> list[logging.LogRecord]:
    """The records of *caplog*, but the server's access log."""
    return [r for r in caplog.records if r.name != "oe_web_socketio.access"]


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n"


def post(headers: bytes, body: bytes) -> bytes:
    """``POST /echo`` with *headers* (lines ending with CRLF) and *body*."""
    return (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + headers
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "Invalid HTTP method"),
        # A TLS ClientHello on the plain port.
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64 + b"\n",
            "Invalid",
        ),
        (b"GET /health HTTP/2.0\r\n\r\n", "Invalid http version"),
        (b"GET /health HTTP/1.x\r\n\r\n", "nvalid"),
        # http.client's limits: gevent printed a traceback for these.
        (HEALTH + b"".join(b"X-%d: a\r\n" % n for n in range(150)) + b"\r\n", "100"),
        (HEALTH + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", "Line too long"),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
            "Invalid Content-Length",
        ),
        (
            post(b"Content-Length: 2\r\nContent-Length: 3\r\n", b"{}x"),
            "conflicting Content-Length",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: x1\r\n\r\n{}",
            "Invalid Content-Length",
        ),
        # What gevent's parser (email.parser) took and the server's own
        # refuses (RFC 9112): a folded line, a space before the colon, a
        # line with no colon (gevent dropped the headers after it), control
        # characters in a value, the end before the empty line.
        (HEALTH + b"X-A: a\r\n b\r\n\r\n", "obsolete line folding"),
        (HEALTH + b"X-A : a\r\n\r\n", "invalid header line: 'X-A : a"),
        (HEALTH + b"no colon\r\nX-A: a\r\n\r\n", "invalid header line"),
        (HEALTH + b"X-A: a\x00b\r\n\r\n", "invalid header line: 'X-A: a\\x00b"),
        (HEALTH + b"X-A: a\rb\r\n\r\n", "invalid header line"),
        (HEALTH + b"X-A: a\r\n", "the request ends before its headers do"),
        # Where the body ends, ambiguous (RFC 9112, 6): gevent read a
        # Content-Length of "+2", took "gzip, chunked" for no coding and
        # dropped a Content-Length beside "chunked".
        (post(b"Content-Length: +2\r\n", b"{}"), "Invalid Content-Length: '+2'"),
        (
            post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
            "unsupported Transfer-Encoding: 'gzip, chunked'",
        ),
        (
            post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
    ],
)
def test_what_gevent_cannot_parse_is_400_json_one_line_no_traceback(
    server, caplog, capfd, data, reason
):
    with caplog.at_level(logging.INFO):
        status, headers, body = exchange(server, data)
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error.startswith("malformed HTTP request: ")
    assert reason in error
    assert error.isascii() and error.isprintable()
    [record] = logged(caplog)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage().startswith("Refused malformed HTTP from 127.0.0.1: ")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        # Broken chunks: the route refuses the body it cannot read.
        (
            post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
            400,
            "cannot read the request body",
        ),
        # A Content-Length larger than what comes (the client stops
        # sending): the body is incomplete.
        (post(b"Content-Length: 9\r\n", b"{}"), None, None),
        (post(b"Content-Length: 5000\r\n", b"{}"), 413, "body too large"),
        (b"PUT /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, None),
    ],
)
def test_bodies_and_methods_a_route_refuses(server, caplog, capfd, data, status, error):
    sock = gevent.socket.create_connection(server.address[:2], timeout=5)
    try:
        sock.sendall(data)
        sock.shutdown(gevent.socket.SHUT_WR)  # nothing more comes
        answer = b""
        with gevent.Timeout(5):
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    if status is None:
        assert head.startswith(b"HTTP/1.1 400 "), answer
    else:
        assert head.startswith(b"HTTP/1.1 %d " % status), answer
    if error is not None:
        assert json.loads(body) == {"error": error}
    if status == 405:
        assert b"\r\nAllow: GET, HEAD\r\n" in head
    assert len(logged(caplog)) <= 1
    assert all(r.exc_info is None for r in caplog.records)
    assert capfd.readouterr().err == ""


def test_the_reason_quoted_back_is_short_printable_ascii():
    reason = malformed_reason(
        ValueError("Invalid HTTP method: '\x00\xff\u2028" + "x" * 500)
    )
    assert reason.isascii() and reason.isprintable()
    assert len(reason) <= 123


# --- plain HTTP to /socket.io/ that is not Engine.IO


@pytest.fixture(scope="module")
def app_server() -> Iterator[Server]:
    """The whole application (Socket.IO and the routes), no host."""
    server = Server(("127.0.0.1", 0), Application(Config(load_entry_points=False)))
    server.start()
    yield server
    server.stop(timeout=1)


def get(path: str, method: str = "GET", headers: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (
        method.encode(),
        path.encode(),
        headers,
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "BREW"])
def test_socketio_other_methods_are_405_with_allow(app_server, caplog, method):
    with caplog.at_level(logging.INFO):
        status, headers, body = exchange(
            app_server, get("/socket.io/?EIO=4&transport=polling", method)
        )
    assert status == 405
    assert headers["allow"] == "GET, OPTIONS, POST"
    if method != "HEAD":
        assert json.loads(body) == {"error": "method not allowed"}
    assert logged(caplog) == []  # the access log line only


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/socket.io/", "unsupported version"),
        ("/socket.io/?EIO=3&transport=polling", "unsupported version"),
        ("/socket.io/?EIO=x&transport=polling", "unsupported version"),
        ("/socket.io/?%FF=%FF", "unsupported version"),
        ("/socket.io/?EIO=4&transport=carrier", "Invalid transport"),
        ("/socket.io/?EIO=4&transport=polling&sid=nope", "Invalid session"),
        ("/socket.io/?EIO=4&transport=polling&sid=%FF", "Invalid session"),
        ("/socket.io/?EIO=4&transport=websocket", "Invalid websocket upgrade"),
    ],
)
def test_socketio_bad_queries_are_400_with_a_reason(
    app_server, caplog, capfd, path, error
):
    with caplog.at_level(logging.INFO):
        status, _, body = exchange(app_server, get(path))
    assert status == 400
    assert error in json.loads(body)
    assert len(logged(caplog)) <= 1
    assert all(r.exc_info is None for r in caplog.records)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    "path",
    [
        "/oe_web_socketio/../setup.py",
        "/oe_web_socketio/%2e%2e/setup.py",
        "/oe_web_socketio/..%2fstatic.py",
        "/oe_web_socketio/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/oe_web_socketio/oe_web_socketio.js%00.txt",
        "/oe_web_socketio/%ff",
        "/oe_web_socketio/%2fetc%2fpasswd",
    ],
)
def test_static_traversal_encoded_is_404(app_server, path):
    """As the server decodes them: nothing outside the static folder."""
    status, _, body = exchange(app_server, get(path))
    assert (status, json.loads(body)) == (404, {"error": "not found"})
