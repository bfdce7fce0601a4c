"""Tests of :mod:`oe_web_socketio.routing`, through its WSGI interface."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import pytest
from oe_web_socketio.routing import (
    DuplicateRouteError,
    Request,
    Response,
    Route,
    Router,
)
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
