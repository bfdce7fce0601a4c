"""Tests of :mod:`oe_web_socketio.static`, through a :class:`Router`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from oe_web_socketio.routing import Router
from oe_web_socketio.static import BUNDLE, static_route

pytestmark = pytest.mark.timeout(10)


def call(app, path: str, method: str = "GET", **headers: str):
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = status
        answer["headers"] = dict(response_headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "192.0.2.7",
        **{f"HTTP_{key.upper()}": value for key, value in headers.items()},
    }
    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    static = tmp_path / "static"
    static.mkdir()
    (static / BUNDLE).write_text("var SocketIO = 1;\n")
    (static / f"{BUNDLE}.map").write_text('{"version": 3}')
    (static / ".hidden").write_text("secret")
    (static / "sub").mkdir()
    (static / "sub" / "x.js").write_text("nested")
    (tmp_path / "outside.js").write_text("outside")
    return static


def test_serves_the_bundle_with_its_type_and_validators(folder):
    router = Router([static_route(folder)])
    status, headers, body = call(router, f"/oe_web_socketio/{BUNDLE}")
    assert status == "200 OK"
    assert body == b"var SocketIO = 1;\n"
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Last-Modified"].endswith("GMT")
    status, headers, body = call(router, f"/oe_web_socketio/{BUNDLE}.map")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"version": 3}


def test_a_matching_etag_is_304_and_a_rebuild_changes_it(folder):
    router = Router([static_route(folder)])
    path = f"/oe_web_socketio/{BUNDLE}"
    _, headers, _ = call(router, path)
    etag = headers["ETag"]
    status, _, body = call(router, path, if_none_match=f'W/{etag}, "other"')
    assert (status, body) == ("304 Not Modified", b"")
    (folder / BUNDLE).write_text("var SocketIO = 22;\n")
    status, headers, body = call(router, path, if_none_match=etag)
    assert status == "200 OK"
    assert body == b"var SocketIO = 22;\n"
    assert headers["ETag"] != etag


@pytest.mark.parametrize(
    "path",
    [
        "/oe_web_socketio/.hidden",
        "/oe_web_socketio/sub",
        "/oe_web_socketio/sub/x.js",
        "/oe_web_socketio/../outside.js",
        "/oe_web_socketio/..%2Foutside.js",
        "/oe_web_socketio/nope.js",
        "/oe_web_socketio/",
        "/oe_web_socketio/..",
        "/oe_web_socketio/..\\outside.js",
        f"/oe_web_socketio/{BUNDLE}\x00.txt",
        f"/oe_web_socketio/{BUNDLE}/",
        "/oe_web_socketio/\xff\xfe",  # WSGI text of bytes that are not UTF-8
        "/oe_web_socketio/" + "a" * 300 + ".js",
        "/oe_web_socketio//etc/passwd",
    ],
)
def test_anything_else_is_404(folder, path):
    status, _, body = call(Router([static_route(folder)]), path)
    assert status == "404 Not Found"
    assert json.loads(body) == {"error": "not found"}


def test_an_unbuilt_bundle_is_404_and_one_log_line(tmp_path, caplog):
    router = Router([static_route(tmp_path / "missing")])
    with caplog.at_level(logging.WARNING, logger="oe_web_socketio.static"):
        status, _, _ = call(router, f"/oe_web_socketio/{BUNDLE}")
    assert status == "404 Not Found"
    lines = [
        r.getMessage() for r in caplog.records if r.name == "oe_web_socketio.static"
    ]
    assert len(lines) == 1
    assert "make build" in lines[0]
    assert "192.0.2.7" in lines[0]


def test_head_has_the_headers_and_no_body(folder):
    status, headers, body = call(
        Router([static_route(folder)]), f"/oe_web_socketio/{BUNDLE}", method="HEAD"
    )
    assert status == "200 OK"
    assert body == b""
    assert headers["Content-Length"] == str(len("var SocketIO = 1;\n"))
