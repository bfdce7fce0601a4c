"""Tests of :mod:`oe_web_socketio.dispatcher` not covered by
``test_namespace.py``: the message log, against real server processes."""

from __future__ import annotations

import pytest
from sample_namespaces import session
from socketio_testing import Clients, count_lines, lines, serve_tests_dir

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def start(spawn_server, monkeypatch, tmp_path):
    """Start a server serving /chat with *settings* in its file."""
    serve_tests_dir(monkeypatch)
    started = []

    def start(settings=""):
        config = tmp_path / "server.conf"
        config.write_text(f"[oe_web_socketio]\n{settings}\n")
        server = spawn_server("-c", str(config), "-n", "/chat=sample_namespaces:Chat")
        clients = Clients(server.url, "websocket")
        started.append(clients)
        return server, clients

    yield start
    for clients in started:
        clients.close()


def test_one_line_per_event_in_the_default_format(start):
    server, clients = start()
    client = clients.connect(auth={"session": session(1)})
    client.call("whoami")
    client.call("echo", "x" * 10)
    assert lines(server, r'127\.0\.0\.1 - admin "Socket.IO /chat whoami" 18$', 1) == 1
    size = len('2/chat,2["echo","xxxxxxxxxx"]')  # the packet, its ack id 2
    assert lines(server, rf'"Socket.IO /chat echo" {size}$', 1) == 1
    assert count_lines(server, "oe_web_socketio.messages") == 2


def test_anonymous_and_refused_events_are_logged_too(start):
    server, clients = start()
    client = clients.connect()
    client.call("whoami")
    assert lines(server, r' - - "Socket.IO /chat whoami" 18$', 1) == 1
    assert lines(server, "Refused event 'whoami'", 1) == 1


def test_a_format_of_our_own(start):
    server, clients = start(
        "message_log_format = %(namespace)s|%(sid)s|%(uid)s|%(db)s|%(event)s"
    )
    client = clients.connect(auth={"session": session(2)})
    client.call("whoami")
    assert lines(server, rf"/chat\|{client.sid}\|2\|oe\|whoami$", 1) == 1


def test_an_empty_format_logs_nothing(start):
    server, clients = start("message_log_format =")
    client = clients.connect(auth={"session": session(1)})
    client.call("whoami")
    client.call("nope")  # its refusal is logged after the message would be
    assert lines(server, "Refused event 'nope'", 1) == 1
    assert count_lines(server, "oe_web_socketio.messages") == 0


def test_max_event_size_is_configurable(start):
    _, clients = start("max_event_size = 100")
    client = clients.connect(auth={"session": session(1)})
    assert client.call("echo", "x" * 50) == "x" * 50
    answer = client.call("echo", "x" * 100)
    assert answer["error"]["code"] == "payload_too_large"
    size = len('2/chat,2["echo","' + "x" * 100 + '"]')
    assert answer["error"]["message"] == f"event of {size} bytes, the limit is 100"


def _a(self): ...
def _b(self, x, y=1): ...
def _c(self, x, /, y, *rest): ...
def _d(self, x, *, key): ...
def _e(self, x, *, key=1, **more): ...
def _f(self, *rest): ...


@pytest.mark.parametrize("handler", [_a, _b, _c, _d, _e, _f])
def test_the_cached_arity_binds_what_signature_binds(handler):
    """The dispatcher checks an event's argument count against the arity
    it found once, and calls Signature.bind (for its message) only for a
    count outside it: both must agree on every count."""
    import inspect

    from oe_web_socketio.dispatcher import positional_arity

    signature = inspect.signature(handler)
    fewest, most = positional_arity(signature)
    for count in range(6):
        try:
            signature.bind(*range(count))
            binds = True
        except TypeError:
            binds = False
        assert binds == (fewest <= count <= most), count
