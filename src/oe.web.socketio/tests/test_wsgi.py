"""Tests of :mod:`oe_web_socketio.wsgi` (and the web.py relay) in process,
and proof in a process of its own that a plain WSGI application is served
without trytond."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from oe_web_socketio import wsgi
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ConfigError
from oe_web_socketio.namespace import Namespace
from wsgi_testing import call_wsgi as call

pytestmark = pytest.mark.timeout(20)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"app {environ['PATH_INFO']}".encode()]


class Echo(Namespace):
    pass


@pytest.fixture
def middleware():
    return wsgi.SocketIOMiddleware(
        hello, namespaces={"/echo": Echo}, authenticate=lambda e, a: None
    )


def test_paths_go_to_the_server_or_to_the_application(middleware):
    status, _, body = call(middleware, "GET", "/health")
    assert (status, json.loads(body)["status"]) == ("200 OK", "ok")
    assert json.loads(body)["databases"] == []  # a plain host has none
    assert call(middleware, "GET", "/")[2] == b"app /"
    assert call(middleware, "GET", "/healthy")[2] == b"app /healthy"
    assert call(middleware, "GET", "/longpolling")[2] == b"app /longpolling"
    status, _, body = call(middleware, "GET", "/socket.io/", "EIO=4&transport=polling")
    assert status == "200 OK" and body.startswith(b"0{")
    assert sorted(middleware.application.socketio.namespaces) == ["/", "/echo"]


def test_the_plain_config_serves_no_installed_eggs():
    assert wsgi.default_config().load_entry_points is False
    assert wsgi.default_config(port=9).port == 9


def test_config_from_settings(tmp_path):
    config = wsgi.config_from_settings({"SOCKETIO_HOST": "::1", "SOCKETIO_PORT": "81"})
    assert (config.interface, config.port, config.load_entry_points) == (
        "::1",
        81,
        False,
    )
    path = tmp_path / "rt.conf"
    path.write_text("[oe_web_socketio]\nport = 90\nping_interval = 7\n")
    config = wsgi.config_from_settings({"SOCKETIO_CONFIG": path})
    assert (config.port, config.ping_interval) == (90, 7)
    config = wsgi.config_from_settings({"SOCKETIO_CONFIG": path, "SOCKETIO_PORT": 91})
    assert config.port == 91
    with pytest.raises(ConfigError, match="^SOCKETIO_PORT: not a port number: 'x'"):
        wsgi.config_from_settings({"SOCKETIO_PORT": "x"})
    with pytest.raises(ConfigError, match="^SOCKETIO_PORT: "):
        wsgi.config_from_settings({"SOCKETIO_PORT": 70000})


def test_script_tags():
    assert wsgi.script_tags() == (
        '<script src="/oe_web_socketio/oe_web_socketio.js"></script>'
    )


@pytest.fixture
def sent(middleware, monkeypatch):
    """What the middleware's python-socketio server is asked to emit:
    (event, data, to, namespace), in order, nothing sent."""
    emitted = []
    monkeypatch.setattr(
        middleware.application.sio,
        "emit",
        lambda event, data, to=None, namespace=None, **_: emitted.append(
            (event, data, to, namespace)
        ),
    )
    return emitted


def test_module_functions_use_the_last_middleware(middleware, sent):
    assert wsgi.current() is middleware
    wsgi.broadcast_channel({"n": 1}, "room")
    wsgi.send("sid1", "hi", namespace="/echo")
    wsgi.broadcast("all", namespace="/")
    assert sent == [
        ("message", ({"n": 1}, "room"), "room", "/echo"),
        ("message", ({"n": 1}, "room"), "room", "/"),
        ("message", ("hi",), "sid1", "/echo"),
        ("message", ("all",), None, "/"),
    ]


def test_publish_goes_through_the_in_process_broker(middleware, sent):
    broker = middleware.application.broker
    wsgi.publish({"n": 1}, "room", namespace="/echo")
    wsgi.publish("all")
    first, second = broker.token("oe", 1), broker.token("oe", 2)
    assert sorted(sent, key=str) == sorted(
        [
            ("message", ({"n": 1}, "room", first), "\0oe\0room", "/echo"),
            ("message", ("all", None, second), "\0oe", "/echo"),
            ("message", ("all", None, second), "\0oe", "/"),
        ],
        key=str,
    )
    kept = broker.replay("oe", 0, 2, namespace="/", channels=["room"])
    assert [m.payload for m in kept] == ["all"]  # the first was /echo's


def test_current_without_middleware(monkeypatch):
    monkeypatch.setattr(wsgi, "_state", {})
    with pytest.raises(RuntimeError, match="no SocketIOMiddleware"):
        wsgi.broadcast("x")


def test_webpy_socketio_urls_relay_through_webpy():
    web = pytest.importorskip("web")
    from oe_web_socketio.contrib import webpy as socketio_webpy

    class Index:
        def GET(self):
            return "index"

    app = web.application(
        ("/", Index, *socketio_webpy.socketio_urls), {}, autoreload=False
    )
    wsgi.SocketIOMiddleware(app.wsgifunc(), config=Config(load_entry_points=False))
    # app.request() goes through web.py alone, not the middleware.
    answer = app.request("/health")
    assert (answer.status, json.loads(answer.data)["status"]) == ("200 OK", "ok")
    answer = app.request("/socket.io/?EIO=4&transport=polling")
    assert answer.status == "200 OK" and answer.data.startswith(b"0{")
    answer = app.request("/longpolling/nothing")
    assert answer.status.startswith("404")
    assert app.request("/").data == b"index"
    answer = app.request(
        "/socket.io/?EIO=4&transport=websocket", headers={"Upgrade": "websocket"}
    )
    assert answer.status.startswith("400")


#: Serves a plain application with a namespace on a free port, connects
#: a client over polling (authenticated by the application), and prints
#: what was imported.
NO_TRYTON = textwrap.dedent(
    """
    from oe_web_socketio.patch import patch
    patch()
    import json, sys, urllib.request
    import gevent
    from oe_web_socketio import Namespace
    from oe_web_socketio.server import Server
    from oe_web_socketio.wsgi import SocketIOMiddleware

    class Chat(Namespace):
        allow_anonymous = False

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"app"]

    def authenticate(environ, auth):
        return auth.get("token") if isinstance(auth, dict) else None

    middleware = SocketIOMiddleware(
        app, namespaces={"/chat": Chat}, authenticate=authenticate
    )
    server = Server(("127.0.0.1", 0), middleware)
    server.start()
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"

    def request(url, data=None):
        with urllib.request.urlopen(url, data=data, timeout=5) as answer:
            return answer.read().decode()

    sid = json.loads(request(base)[1:])["sid"]
    request(f"{base}&sid={sid}", b'40/chat,{"token":"alice"}')
    connected = request(f"{base}&sid={sid}")
    server.stop(timeout=1)
    print(json.dumps({
        "connected": connected,
        "app": request.__name__,
        "modules": sorted(
            name for name in sys.modules
            if name.split(".")[0] == "trytond"
            or name.startswith("oe_web_socketio.hosts.tryton")
        ),
    }))
    """
)


def test_a_plain_application_never_imports_trytond():
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", NO_TRYTON],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["connected"].startswith('40/chat,{"sid":')
    assert result["modules"] == []
