"""Tests of :mod:`oe_web_socketio.app`, the wiring, called as WSGI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oe_web_socketio.app import (
    Application,
    cors_allowed_origins,
    socketio_options,
)
from oe_web_socketio.auth import AllowedOrigins
from oe_web_socketio.config import Config
from oe_web_socketio.namespace import Namespace
from oe_web_socketio.protocol import Packet
from wsgi_testing import call_wsgi as call

pytestmark = pytest.mark.timeout(10)

TESTS_DIR = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("origins", "expected"),
    [
        ((), None),  # same origin only
        (("*",), "*"),
        (
            ("https://a.org", "http://b.org:8080"),
            # Listed origins as well as the server's own.
            AllowedOrigins(frozenset({"https://a.org", "http://b.org:8080"})),
        ),
    ],
)
def test_cors_allowed_origins(origins, expected):
    assert cors_allowed_origins(origins) == expected


def test_socketio_options_follow_config():
    options = socketio_options(
        Config(ping_interval=3, ping_timeout=4, max_http_buffer_size=5)
    )
    assert options["async_mode"] == "gevent"
    assert options["async_handlers"] is True  # the dispatcher relies on it
    assert options["namespaces"] == "*"  # unknown ones refused with a reason
    assert options["serializer"] is Packet
    assert (options["ping_interval"], options["ping_timeout"]) == (3, 4)
    assert options["max_http_buffer_size"] == 5
    assert options["cors_allowed_origins"] is None


def test_application_builds_a_gevent_socketio_server():
    app = Application(Config(ping_interval=3))
    assert app.sio.async_mode == "gevent"
    assert app.sio.eio.ping_interval == 3
    assert app.count_clients() == 0


def test_application_serves_the_base_namespace_at_the_root_by_default():
    app = Application(Config(load_entry_points=False))
    assert app.socketio.namespaces == {"/": Namespace}


def test_application_serves_configured_namespaces(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    app = Application(
        Config(
            namespaces=("/=sample_namespaces:Public", "/c=sample_namespaces:Chat"),
            max_event_size=10,
            load_entry_points=False,
        )
    )
    assert sorted(app.socketio.namespaces) == ["/", "/c"]
    assert app.socketio.namespaces["/"].__name__ == "Public"
    assert app.socketio.dispatcher("/c").settings.max_event_size == 10


def test_plain_paths_go_to_the_router():
    app = Application(Config(databases=("x",)))
    status, _, body = call(app, "GET", "/health")
    assert status == "200 OK"
    assert json.loads(body)["databases"] == ["x"]
    status, _, body = call(app, "GET", "/socket.io")  # no trailing slash
    assert status == "404 Not Found"
    assert json.loads(body) == {"error": "not found"}


def test_what_a_host_contributes_is_served():
    from oe_web_socketio.hosts.wsgi import WSGIHost
    from oe_web_socketio.routing import Response, Route

    class Contributing(WSGIHost):
        def routes(self):
            return (Route("/<database>/news", lambda request: Response.json("hi")),)

        def counters(self):
            return {"news": lambda: {"held": 0}}

    app = Application(Config(databases=("x",), load_entry_points=False), Contributing())
    # No database: nothing durable, no cursors for the sockets.
    assert app.broker.durable is False and app.socketio.settings.pools is None
    status, _, body = call(app, "GET", "/x/news")
    assert (status, json.loads(body)) == ("200 OK", "hi")
    health = json.loads(call(app, "GET", "/health")[2])
    # A host without a database names none; its counter is there.
    assert health["databases"] == []
    assert health["news"] == {"held": 0}
    app.shutdown()


def test_socketio_paths_go_to_engineio():
    app = Application(Config())
    status, _, body = call(app, "GET", "/socket.io/", "EIO=4&transport=polling")
    assert status == "200 OK"
    assert body.startswith(b'0{"sid":')
    assert app.count_clients() == 0  # an Engine.IO session, no namespace yet
    [session] = app.sio.eio.sockets.values()
    assert not session.closed
    app.shutdown()
    assert session.closed


def test_refuses_other_origins_by_default():
    app = Application(Config())

    def start_response(status, headers, exc_info=None):
        start_response.status = status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/socket.io/",
        "QUERY_STRING": "EIO=4&transport=polling",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "localhost",
        "HTTP_ORIGIN": "http://evil.example",
    }
    body = b"".join(app(environ, start_response))
    assert start_response.status == "400 BAD REQUEST"
    assert b"Not an accepted origin" in body


def test_the_wsgi_chain_calls_methods_not_instances():
    """A WebSocket's greenlet stays inside this chain as long as the
    connection lives: an instance's ``__call__`` is reached through a C
    recursion, whose C stack the greenlet keeps in the heap (1.4 KiB per
    idle connection for these two; memory per idle connection, README
    "Benchmarks"), a bound method is not."""
    import inspect

    from oe_web_socketio.server import make_server

    application = Application(Config(load_entry_points=False))
    server = make_server(Config(port=0), application)
    assert inspect.ismethod(server.application)
    assert server.application.__self__ is application
    assert inspect.ismethod(application._wsgi_app)
