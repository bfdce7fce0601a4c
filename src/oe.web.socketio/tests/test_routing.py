"""Tests of :mod:`oe_web_socketio.routing`, through its WSGI interface."""

from __future__ import annotations

import io
import json
import logging
from http import HTTPStatus

import gevent
import gevent.socket
import pytest
from oe_web_socketio.routing import (
    DuplicateRouteError,
    HTTPError,
    Request,
    Response,
    Route,
    Router,
)
from oe_web_socketio.server import Server
from wsgi_testing import call_wsgi

pytestmark = pytest.mark.timeout(10)


def call(app, method: str, path: str) -> tuple[str, dict[str, str], bytes]:
    return call_wsgi(app, method, path, remote_addr="192.0.2.7")


def hello(request: Request) -> Response:
    return Response(HTTPStatus.OK, f"hello {request.method}".encode())


def test_get_answers_endpoint_response_with_length():
    router = Router([Route("/hello", hello)])
    status, headers, body = call(router, "GET", "/hello")
    assert status == "200 OK"
    assert body == b"hello GET"
    assert headers["Content-Length"] == "9"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_head_has_get_headers_and_no_body():
    router = Router([Route("/hello", hello)])
    status, headers, body = call(router, "HEAD", "/hello")
    assert status == "200 OK"
    assert body == b""
    assert headers["Content-Length"] == "10"  # "hello HEAD"


def test_unknown_path_is_404_json():
    status, headers, body = call(Router([Route("/hello", hello)]), "GET", "/nope")
    assert status == "404 Not Found"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "not found"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_method_is_405_with_allow(method):
    status, headers, body = call(Router([Route("/hello", hello)]), method, "/hello")
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body) == {"error": "method not allowed"}


def test_endpoint_failure_is_logged_and_answered_500(caplog):
    def broken(request):
        raise RuntimeError("secret detail")

    router = Router([Route("/broken", broken)])
    with caplog.at_level(logging.ERROR, logger="oe_web_socketio.routing"):
        status, _, body = call(router, "GET", "/broken")
    assert status == "500 Internal Server Error"
    assert json.loads(body) == {"error": "internal server error"}
    assert b"secret" not in body
    [record] = caplog.records
    assert record.getMessage() == "Internal error answering GET /broken from 192.0.2.7"
    assert record.exc_info[0] is RuntimeError


def test_duplicate_route_is_refused_with_context():
    first, second = Route("/x", hello), Route("/x", hello, frozenset({"POST"}))
    router = Router([first])
    with pytest.raises(DuplicateRouteError) as info:
        router.add(second)
    assert (info.value.existing, info.value.duplicate) == (first, second)
    assert "path '/x' already routed" in str(info.value)


def test_json_response():
    response = Response.json({"a": [1]}, HTTPStatus.CREATED, [("X-A", "b")])
    assert response.body == b'{"a":[1]}'
    assert response.wsgi_headers() == [
        ("Content-Type", "application/json"),
        ("Content-Length", "9"),
        ("X-A", "b"),
    ]


# --- placeholders


def echo_args(request: Request) -> Response:
    return Response.json(dict(request.path_args))


def test_placeholders_reach_the_endpoint_as_path_args():
    router = Router(
        [
            Route("/<database>/bus", echo_args, frozenset({"POST"})),
            Route("/x/<var1>/<int:var2>", echo_args),
        ]
    )
    status, _, body = call(router, "POST", "/oe/bus")
    assert status == "200 OK"
    assert json.loads(body) == {"database": "oe"}
    status, _, body = call(router, "GET", "/x/a/42")
    assert json.loads(body) == {"var1": "a", "var2": 42}


def test_placeholder_matches_one_segment_and_its_converter_only():
    router = Router([Route("/x/<var1>/<int:var2>", echo_args)])
    for path in ("/x/a/b", "/x/a", "/x/a/1/2", "/x//1"):
        status, _, body = call(router, "GET", path)
        assert (status, json.loads(body)) == ("404 Not Found", {"error": "not found"})


def test_placeholder_value_is_utf8_decoded():
    router = Router([Route("/<database>/bus", echo_args, frozenset({"POST"}))])
    # What a WSGI server puts in PATH_INFO for /caf%C3%A9/bus.
    path = "/café/bus".encode().decode("latin-1")
    status, _, body = call(router, "POST", path)
    assert status == "200 OK"
    assert json.loads(body) == {"database": "café"}


def test_static_path_wins_over_placeholder():
    def static(request):
        return Response(HTTPStatus.OK, b"static")

    router = Router([Route("/<database>/bus", echo_args), Route("/health/bus", static)])
    assert call(router, "GET", "/health/bus")[2] == b"static"
    assert json.loads(call(router, "GET", "/oe/bus")[2]) == {"database": "oe"}


@pytest.mark.parametrize("path", ["/hello/", "//hello", "/hello//", "hello/"])
def test_paths_match_exactly_without_redirect(path):
    router = Router([Route("/hello", hello), Route("/dir/", hello)])
    status, headers, body = call(router, "GET", path)
    assert status == "404 Not Found"
    assert json.loads(body) == {"error": "not found"}
    assert "Location" not in headers
    # A route ending with a slash is not reached without it either.
    assert call(router, "GET", "/dir")[0] == "404 Not Found"
    assert call(router, "GET", "/dir/")[0] == "200 OK"


def test_405_on_placeholder_route_names_its_methods():
    router = Router([Route("/<database>/bus", echo_args, frozenset({"POST"}))])
    status, headers, _ = call(router, "GET", "/oe/bus")
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "POST"


def test_request_built_without_path_args_has_none():
    request = Request({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"})
    assert dict(request.path_args) == {}


def test_same_path_with_other_placeholder_names_is_a_duplicate():
    router = Router([Route("/x/<a>", hello)])
    with pytest.raises(DuplicateRouteError):
        router.add(Route("/x/<string:b>", hello))
    router.add(Route("/x/<int:b>", hello))  # another shape: accepted


def test_invalid_path_is_refused():
    with pytest.raises(ValueError):
        Router([Route("no-slash", hello)])


# --- client errors raised by endpoints


def test_http_error_is_answered_with_its_status_and_logged_once(caplog):
    def refuse(request):
        raise HTTPError(HTTPStatus.CONFLICT, "try another")

    router = Router([Route("/r", refuse)])
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.routing"):
        status, headers, body = call(router, "GET", "/r")
    assert status == "409 Conflict"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "try another"}
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "Refused GET /r from 192.0.2.7: 409 try another"


# --- request bodies


def body_request(body: bytes | io.RawIOBase, content_length: str | None) -> Request:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/b"}
    environ["wsgi.input"] = io.BytesIO(body) if isinstance(body, bytes) else body
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    return Request(environ)


def test_body_is_read_whole_and_once():
    request = body_request(b'{"a": 1}', "8")
    assert request.body(8) == b'{"a": 1}'
    assert request.body(8) == b'{"a": 1}'


@pytest.mark.parametrize("content_length", [None, "", "0"])
def test_missing_body_is_empty(content_length):
    assert body_request(b"", content_length).body(10) == b""


@pytest.mark.parametrize(
    ("body", "content_length", "status", "reason"),
    [
        (b"x" * 11, "11", HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"),
        (b"", "9" * 5000, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"),
        # Chunked (no Content-Length): read one byte more than allowed.
        (b"x" * 11, None, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"),
        (b"x", "-1", HTTPStatus.BAD_REQUEST, "invalid Content-Length"),
        (b"x", "1e3", HTTPStatus.BAD_REQUEST, "invalid Content-Length"),
        (b"x", "²", HTTPStatus.BAD_REQUEST, "invalid Content-Length"),
        (b"xx", "5", HTTPStatus.BAD_REQUEST, "incomplete request body"),
    ],
)
def test_bad_body_is_refused(body, content_length, status, reason):
    with pytest.raises(HTTPError) as info:
        body_request(body, content_length).body(10)
    assert (info.value.status, info.value.reason) == (status, reason)


def test_body_at_the_limit_is_accepted_chunked():
    assert body_request(b"x" * 10, None).body(10) == b"x" * 10


class BrokenStream(io.RawIOBase):
    def read(self, size=-1):
        raise OSError("unexpected end of file while parsing chunked data")


def test_unreadable_body_is_400():
    with pytest.raises(HTTPError) as info:
        body_request(BrokenStream(), None).body(10)
    assert info.value.status == HTTPStatus.BAD_REQUEST
    assert info.value.reason == "cannot read the request body"


# --- through a real gevent server


def echo_body(request: Request) -> Response:
    return Response(HTTPStatus.OK, request.body(16))


def exchange(server: Server, raw: bytes) -> bytes:
    with gevent.socket.create_connection(server.address[:2]) as client:
        client.sendall(raw)
        chunks = []
        with gevent.Timeout(5):
            while chunk := client.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def body_server():
    server = Server(
        ("127.0.0.1", 0), Router([Route("/b", echo_body, frozenset({"POST"}))])
    )
    server.start()
    yield server
    server.stop(timeout=1)


def test_server_reads_a_chunked_body(body_server):
    answer = exchange(
        body_server,
        b"POST /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nabcde")


def test_server_refuses_a_too_large_chunked_body(body_server):
    chunk = b"x" * 17
    answer = exchange(
        body_server,
        b"POST /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n11\r\n" + chunk + b"\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert answer.endswith(b'{"error":"body too large"}')


def test_server_refuses_broken_chunks(body_server):
    answer = exchange(
        body_server,
        b"POST /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
