"""The example chats in front of a plain WSGI, a web.py and a Flask
application, each started with its real framework on gevent, driven by
python-socketio clients over WebSocket and over polling, and by plain HTTP
requests to their ordinary views.

No Tryton here: the applications authenticate with their own callable
(tokens, see ``examples/wsgi_chat``); ``tests/wsgi_hosts_server.py`` adds
a token that makes it raise and one that makes it return garbage.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from .realtime import ServerProcess, http
from .tryton import free_port

#: Seconds any single exchange may take.
TIMEOUT = 10.0

FRAMEWORKS = ("wsgi", "webpy", "flask")
TRANSPORTS = ("websocket", "polling")

LAUNCHER = Path(__file__).resolve().parent / "wsgi_hosts_server.py"

#: What a client is told when the application's callable fails.
HOST_FAILURE = "the server could not check the credentials"


class ExampleServer(ServerProcess):
    """``python tests/wsgi_hosts_server.py FRAMEWORK PORT``, its log kept."""

    def __init__(self, framework: str, log: Path) -> None:
        self.framework = framework
        self.name = f"{framework} chat"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start(
            [sys.executable, str(LAUNCHER), framework, str(self.port)],
            log,
            os.environ.copy(),
        )

    def ready(self) -> None:
        if self.get("/health")[0] != 200:
            raise OSError("not healthy yet")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers=None
    ) -> tuple[int, dict[str, str], bytes]:
        return http(
            self.url + path, method=method, body=body, headers=headers, timeout=TIMEOUT
        )

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path)

    def announce(self, fields: dict[str, Any], form: bool = False):
        """POST /announce, the ordinary view; its status and JSON."""
        if form:
            body = urllib.parse.urlencode(fields).encode()
            kind = "application/x-www-form-urlencoded"
        else:
            body, kind = json.dumps(fields).encode(), "application/json"
        status, _, answer = self.request(
            "POST", "/announce", body, {"Content-Type": kind}
        )
        return status, json.loads(answer)

    def count(self, pattern: str) -> int:
        """Lines of the log matching *pattern*, once they are there (the log
        is written before the answer, but read through the file)."""
        regex = re.compile(pattern)
        lines = self.log.read_text().splitlines()
        return sum(1 for line in lines if regex.search(line))


class Client:
    """A python-socketio client of one namespace that records what comes."""

    def __init__(self, server: ExampleServer, transport: str, namespace="/chat"):
        self.server = server
        self.transport = transport
        self.namespace = namespace
        self.sio = socketio.Client(reconnection=False)
        self.received: queue.Queue = queue.Queue()
        self.connect_error: Any = None
        self.sio.on("*", self._record, namespace=namespace)
        self.sio.on("connect_error", self._refused, namespace=namespace)

    def _record(self, event: str, *args: Any) -> None:
        self.received.put((event, *args))

    def _refused(self, data: Any) -> None:
        self.connect_error = data

    def connect(self, token: str | None = None) -> Client:
        self.sio.connect(
            self.server.url,
            namespaces=[self.namespace],
            transports=[self.transport],
            auth=None if token is None else {"session": token},
            wait_timeout=TIMEOUT,
        )
        return self

    def refused(self, token: str | None = None) -> Any:
        """Try to connect; return the ``connect_error`` data it must get."""
        try:
            self.connect(token)
        except socketio.exceptions.ConnectionError:
            return self.connect_error
        raise AssertionError("the connection was accepted")

    def call(self, event: str, *args: Any) -> Any:
        return self.sio.call(event, args, namespace=self.namespace, timeout=TIMEOUT)

    def messages(self) -> list[tuple[Any, ...]]:
        """The ``message`` events received so far, after a round trip
        (everything sent before it has arrived: one connection is ordered)."""
        self.call("whoami")
        found = []
        while True:
            try:
                event, *args = self.received.get_nowait()
            except queue.Empty:
                return found
            if event == "message":
                found.append(tuple(args))

    def wait_message(self, predicate) -> tuple[Any, ...]:
        deadline = time.monotonic() + TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event, *args = self.received.get(timeout=remaining)
            except queue.Empty:
                break
            if event == "message" and predicate(*args):
                return tuple(args)
        raise AssertionError(f"no such message within {TIMEOUT} s")

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


@pytest.fixture(scope="module", params=FRAMEWORKS)
def server(request, tmp_path_factory) -> Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp(f"wsgi-{request.param}") / "server.log"
    started = ExampleServer(request.param, log)
    yield started
    started.stop()
    # SIGTERM stops it gracefully, whatever the framework.
    assert started.process.returncode == 0, log.read_text()[-3000:]
    assert started.count(r"INFO oe_web_socketio.cli: Stopped$") == 1


@pytest.fixture(params=TRANSPORTS)
def clients(request, server):
    """Makes clients of *server* on the transport; closes them after."""
    made: list[Client] = []

    def make(token: str | None = None, namespace: str = "/chat") -> Client:
        client = Client(server, request.param, namespace)
        made.append(client)
        return client if token is None else client.connect(token)

    yield make
    for client in made:
        client.close()


def says(text: str):
    return lambda line, channel=None: (
        line.get("type") == "say" and line.get("text") == text
    )


def test_channels_reach_their_subscribers_only(clients):
    alice, bob, carol = (clients(f"{n}-token") for n in ("alice", "bob", "carol"))
    assert alice.call("subscribe", "room-a") is True
    assert bob.call("subscribe", "room-a") is True
    assert carol.call("subscribe", "room-b") is True
    alice.sio.send(("hi all", "room-a"), namespace="/chat")
    line, channel = bob.wait_message(says("hi all"))
    assert (line["login"], channel) == ("alice", "room-a")
    alice.wait_message(says("hi all"))  # the sender too
    assert not [m for m in carol.messages() if m[1] == "room-a"]

    assert bob.call("unsubscribe", "room-a") is True
    alice.sio.send(("anyone?", "room-a"), namespace="/chat")
    alice.wait_message(says("anyone?"))
    assert not [m for m in bob.messages() if m[0].get("text") == "anyone?"]


def test_acknowledgements_answer_the_emitter(clients):
    bob = clients("bob-token")
    bob.call("subscribe", "room-x")
    assert bob.call("whoami") == {"login": "bob", "uid": 2, "rooms": ["room-x"]}
    # The chat's own checks answer in the acknowledgement too.
    answer = bob.call("message", "", "room-x")
    assert answer["error"]["code"] == "bad_request"


def test_acl_refuses_what_a_user_may_not_emit(clients, server):
    guest = clients("guest-token")
    assert guest.call("subscribe", "room-a") is True
    answer = guest.call("message", "let me talk", "room-a")
    assert answer == {
        "error": {"code": "forbidden", "message": "event 'message' is not allowed"}
    }
    # Anonymous on "/" (the base namespace): only session_id, until then.
    anonymous = clients(namespace="/").connect()
    assert anonymous.call("subscribe", "room-a")["error"]["code"] == "forbidden"
    identity = anonymous.call("session_id", {"session": "carol-token"})
    assert identity == {"uid": 3, "login": "carol", "db": None}
    assert anonymous.call("subscribe", "room-a") is True


def test_a_view_broadcasts_to_the_room_only(clients, server):
    alice, carol = clients("alice-token"), clients("carol-token")
    alice.call("subscribe", "room-news")
    carol.call("subscribe", "room-other")
    status, answer = server.announce({"room": "room-news", "text": "sale today"})
    assert status == 200
    assert answer["sent"]["type"] == "announce"
    line, channel = alice.wait_message(
        lambda line, channel=None: line["type"] == "announce"
    )
    assert (line["text"], channel) == ("sale today", "room-news")
    status, _ = server.announce({"room": "room-news", "text": "by form"}, form=True)
    assert status == 200
    alice.wait_message(lambda line, channel=None: line.get("text") == "by form")
    assert not [m for m in carol.messages() if m[0]["type"] == "announce"]
    # Bad input to the view: 400, nothing sent.
    status, answer = server.announce({"room": "not a room", "text": "x"})
    assert (status, answer) == (400, {"error": "room must be a room: room-<name>"})


def test_resume_gives_positions_of_the_process_and_resyncs_others(server):
    # The in-process broker (pubsub/local.py): positions of this process's
    # epoch; one of another start, or garbage, is told to resync.
    client = Client(server, "websocket").connect("alice-token")
    try:
        answer = client.call("resume", None, ["room-a"])
        epoch = answer["position"].rpartition(":")[0]
        assert (epoch.startswith("local-"), answer["replayed"]) == (True, 0)
        again = client.call("resume", "local-0:1", [])
        assert (again["resync"], again["position"]) == (True, answer["position"])
        assert client.call("resume", answer["position"], []) == answer
    finally:
        client.close()


def test_authentication_accepted_refused_and_failing(clients, server):
    assert clients().refused() == {
        "message": "authentication required",
        "data": {"code": "authentication_failed"},
    }
    assert clients().refused("mallory-token") == {
        "message": "unknown token",
        "data": {"code": "authentication_failed"},
    }
    before = server.count(r"^RuntimeError: the user store is down")
    assert clients().refused("raise-token") == {
        "message": HOST_FAILURE,
        "data": {"code": "internal_error"},
    }
    assert server.count(r"^RuntimeError: the user store is down") == before + 1
    assert server.count(r"^Traceback") >= 1
    garbage = server.count(r"returned 42 for .*: not a user")
    assert clients().refused("garbage-token") == {
        "message": HOST_FAILURE,
        "data": {"code": "internal_error"},
    }
    assert server.count(r"returned 42 for .*: not a user") == garbage + 1
    # The server lives on.
    assert clients("alice-token").call("whoami")["login"] == "alice"


def test_the_open_files_limit_is_raised_and_caps_connections(server):
    """SocketIOMiddleware.run as the command line: the soft limit of open
    files (1024 at start) raised to the hard one, the sessions and the
    connections at once capped from it, and a line saying so."""
    limits = (Path("/proc") / str(server.process.pid) / "limits").read_text()
    soft, hard = re.search(r"Max open files +(\S+) +(\S+) ", limits).groups()
    assert soft == hard
    if hard == "unlimited":
        pytest.skip("no hard limit of open files")
    assert (
        server.count(
            rf"INFO oe_web_socketio.wsgi: Open files limit {hard} \(raised from 1024\);"
            r" max_connections \d+, connections at once \d+$"
        )
        == 1
    )


def test_the_page_includes_the_client_served_by_the_server(server):
    status, headers, body = server.get("/")
    assert status == 200
    assert b'<script src="/oe_web_socketio/oe_web_socketio.js"></script>' in body
    status, headers, body = server.get("/oe_web_socketio/oe_web_socketio.js")
    assert status == 200
    assert headers["Content-Type"].startswith("text/javascript")
    assert b"SocketIO" in body
    status, _, body = server.get("/health")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    # Other paths are the application's.
    assert server.get("/nowhere")[0] == 404
