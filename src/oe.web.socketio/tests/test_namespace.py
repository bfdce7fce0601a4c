"""Tests of :mod:`oe_web_socketio.namespace` and the dispatcher behind it.

The per-socket state (ACL, channel rules) is tested in this process; the
rest against real server processes serving ``sample_namespaces``, with the
python-socketio client over WebSocket and polling.
"""

from __future__ import annotations

import base64

import pytest
from oe_web_socketio.auth import Identity
from oe_web_socketio.exceptions import DatabaseUnavailable, EventError
from oe_web_socketio.namespace import NO_DATABASE, Namespace, Request
from oe_web_socketio.pool import CursorPools
from oe_web_socketio.protocol import UNAVAILABLE
from sample_namespaces import KEY, session
from socketio_testing import (
    NAMESPACE_OPTIONS,
    TRANSPORTS,
    Clients,
    count_lines,
    health,
    lines,
    serve_tests_dir,
)

pytestmark = pytest.mark.timeout(60)

ADMIN = {"uid": 1, "login": "admin", "db": "oe"}


class error:  # lower case: reads as a function in assertions
    """Equal to the error payload of *code* (and *message*, if given)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, code, message=None):
        self.code = code
        self.message = message

    def __eq__(self, other):
        try:
            payload = other["error"]
        except (TypeError, KeyError):
            return False
        return payload["code"] == self.code and self.message in (
            None,
            payload["message"],
        )

    def __repr__(self):
        return f"<error {self.code} {self.message or ''}>"


# --- per-socket state, in process


def make_namespace(cls=Namespace, uid=None):
    namespace = cls(None, "/", "sid", Request({}, "127.0.0.1"))
    if uid is not None:
        namespace.authenticate(Identity("oe", uid, f"user{uid}"))
    return namespace


def test_initial_acl_allows_only_the_authentication_event():
    namespace = make_namespace()
    assert namespace.is_event_allowed("session_id")
    assert not namespace.is_event_allowed("subscribe")
    assert namespace.identity is None and namespace.uid is None


def test_authentication_lifts_the_acl():
    namespace = make_namespace(uid=7)
    assert (namespace.uid, namespace.login, namespace.db) == (7, "user7", "oe")
    assert namespace.allowed_events is None
    assert namespace.is_event_allowed("anything")


def test_acl_methods():
    namespace = make_namespace()
    namespace.add_acl_method("subscribe")
    assert namespace.is_event_allowed("subscribe")
    namespace.del_acl_method("subscribe")
    assert not namespace.is_event_allowed("subscribe")
    namespace.lift_acl_restrictions()
    assert namespace.is_event_allowed("subscribe")
    namespace.add_acl_method("x")  # no effect on a lifted ACL
    assert namespace.allowed_events is None
    with pytest.raises(ValueError, match="lifted"):
        namespace.del_acl_method("subscribe")
    namespace.reset_acl()
    assert namespace.allowed_events == {"session_id"}


def test_authenticated_acl_can_be_restricted():
    class ReadOnly(Namespace):
        def get_authenticated_acl(self):
            return ["session_id", "subscribe"]

    namespace = make_namespace(ReadOnly, uid=1)
    assert namespace.allowed_events == {"session_id", "subscribe"}


@pytest.mark.parametrize(
    ("uid", "channel", "allowed"),
    [
        (1, "room-1", True),
        (1, "user:1", True),
        (1, "user:2", False),
        (1, "user:01", False),
        (1, "user:", False),
        (None, "user:1", False),
        (None, "room-1", True),  # the ACL forbids subscribe, not this
        (1, "", False),
        (1, "x" * 200, True),
        (1, "x" * 201, False),
    ],
)
def test_can_subscribe(uid, channel, allowed):
    assert make_namespace(uid=uid).can_subscribe(channel) is allowed


def test_an_idle_socket_holds_no_containers_of_its_own():
    """Per-socket state is allocated when used (memory per idle
    connection, README "Benchmarks"): the empty channel and room sets are
    shared, and there is no greenlet set, adapter queue or resume lock."""
    first, second = make_namespace(uid=1), make_namespace(uid=2)
    assert first._channels is second._channels is first._rooms
    assert (first._greenlets, first._adapter_queue, first._resume_lock) == (
        None,
        None,
        None,
    )
    assert first.greenlet_count == 0
    first.validate()  # nothing was offered: nothing to mark
    assert first._adapter_queue is None
    assert first.adapter_queue is first.adapter_queue  # made once, on use


class RoomsOnly:
    """What a socket's server is asked for when it subscribes."""

    def __init__(self) -> None:
        self.rooms: set[str] = set()

    def enter_room(self, sid, room, namespace=None) -> None:
        self.rooms.add(room)

    def leave_room(self, sid, room, namespace=None) -> None:
        self.rooms.discard(room)


def test_without_a_database_resume_only_subscribes_and_publish_is_refused():
    # A namespace built without a server's broker (pubsub.NULL): nothing
    # to replay or publish through (a WSGI host's: test_pubsub_local.py).
    server = RoomsOnly()
    namespace = Namespace(server, "/", "sid", Request({}, "127.0.0.1"))
    namespace.authenticate(Identity("oe", 7, "user7"))
    answer = namespace.on_resume("epoch:1", ["news"])
    assert answer == {"position": None, "replayed": 0}
    assert namespace.channels == {"news"} and "news" in server.rooms
    for publish in (namespace.publish, namespace.notify):
        with pytest.raises(EventError) as info:
            publish("hello", "news")
        assert (info.value.code, info.value.message) == (
            UNAVAILABLE,
            "this server has no database bridge",
        )


def test_cursor_lends_from_the_host_pools_of_the_socket_database():
    server = RoomsOnly()
    without = Namespace(server, "/", "sid", Request({}, "127.0.0.1"))
    without.authenticate(Identity("oe", 7, "user7"))
    assert not without.has_database
    with pytest.raises(EventError) as info, without.cursor():
        pass
    assert (info.value.code, info.value.message) == (UNAVAILABLE, NO_DATABASE)
    # Pools on a server out of reach: the cursor is asked of the pool of
    # the user's database, which says so (the real pools: test_demo.py).
    nowhere = "postgresql://nobody@/{}?host=/nonexistent/oe_web_socketio"
    with CursorPools(nowhere.format, 1, 0.3) as pools:
        socket = Namespace(server, "/", "sid", Request({}, "127.0.0.1"), pools=pools)
        socket.authenticate(Identity("sales", 7, "user7"))
        assert socket.has_database
        with pytest.raises(DatabaseUnavailable) as unavailable, socket.cursor():
            pass
        assert unavailable.value.database == "sales"


def test_request_view():
    request = Request(
        {
            "HTTP_USER_AGENT": "test",
            "CONTENT_TYPE": "text/plain",
            "QUERY_STRING": "EIO=4&token=a",
        },
        "10.0.0.1",
    )
    assert request.headers == {"user-agent": "test", "content-type": "text/plain"}
    assert request.query == {"EIO": ["4"], "token": ["a"]}
    assert request.address == "10.0.0.1"
    with pytest.raises(TypeError):
        request.environ["X"] = 1  # read-only


# --- against a real server


@pytest.fixture
def transport():
    """The transport of the clients; some tests run over both."""
    return "websocket"


@pytest.fixture
def server(spawn_server, monkeypatch):
    serve_tests_dir(monkeypatch)
    return spawn_server(*NAMESPACE_OPTIONS)


@pytest.fixture
def clients(server, transport):
    made = Clients(server.url, transport)
    yield made
    made.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_session_id_lifts_the_acl_and_handlers_answer(clients, server):
    client = clients.connect()
    assert client.call("echo", 1) == error("forbidden", "event 'echo' is not allowed")
    assert client.authenticate(session(1)) == ADMIN
    assert client.call("echo", 1, "two", {"three": 3}) == (1, "two", {"three": 3})
    assert client.call("whoami") == ADMIN
    assert client.call("channels") == []  # None is an empty acknowledgement


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_acl_refusal_is_answered_and_the_handler_never_runs(clients, server):
    anonymous = clients.connect()
    assert anonymous.call("touch", "with-ack") == error("forbidden")
    anonymous.emit("touch", "without-ack")
    # Without an acknowledgement, the error comes as an "error" event.
    assert anonymous.next() == ("error", error("forbidden"))
    admin = clients.connect(auth={"session": session(1)})
    journal = admin.call("journal")
    assert ["touch", "with-ack"] not in journal
    assert ["touch", "without-ack"] not in journal
    assert lines(server, r"Refused event 'touch' .* is not allowed", 2) == 2
    assert admin.call("touch", "admin") == "touched"
    assert ["touch", "admin"] in admin.call("journal")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_credentials_at_connect_authenticate(clients):
    by_auth = clients.connect(auth={"session": session(1), "database": "oe"})
    assert by_auth.call("whoami") == ADMIN
    header = {"Authorization": f"Session {session(2)}"}
    by_header = clients.connect(headers=header)
    assert by_header.call("whoami") == {"uid": 2, "login": "bob", "db": "oe"}


@pytest.mark.parametrize(
    "auth",
    [
        {"session": session(1, key="f" * 64)},  # wrong key
        {"session": session(9)},  # unknown user
        {"session": session(1), "database": "other"},
        {"session": "not base64!"},
        {"session": base64.b64encode(b"admin:x:" + KEY.encode()).decode()},
        "not an object",
    ],
)
def test_bad_credentials_refuse_the_connection(clients, server, auth):
    bystander = clients.connect(auth={"session": session(2)})
    refusal = clients.new(auth=auth).refused()
    assert refusal["data"] == {"code": "authentication_failed"}
    assert refusal["message"] in (
        "invalid session",
        "malformed session",
        "the auth payload must be an object",
    )
    assert lines(server, "Refused connection to /chat", 1) == 1
    assert bystander.call("whoami")["uid"] == 2


def test_bad_session_id_is_answered_and_the_socket_stays_anonymous(clients):
    client = clients.connect()
    assert client.authenticate(session(1, key="0" * 64)) == error(
        "authentication_failed", "invalid session"
    )
    assert client.authenticate("@@@") == error("authentication_failed")
    assert client.authenticate(42) == error("bad_request")
    assert client.call("whoami") == error("forbidden")
    assert client.authenticate({"session": session(1), "database": "oe"}) == ADMIN


def test_a_socket_cannot_switch_users(clients):
    client = clients.connect(auth={"session": session(1)})
    assert client.authenticate(session(1)) == ADMIN
    assert client.authenticate(session(2)) == error("authentication_failed")
    assert client.call("whoami") == ADMIN


def test_anonymous_clients_refused_where_not_allowed(clients, server):
    refusal = clients.new("/private").refused()
    assert refusal == {
        "message": "authentication required",
        "data": {"code": "authentication_failed"},
    }
    assert clients.connect("/private", auth={"session": session(1)}).call("whoami") == (
        ADMIN
    )


def test_a_namespace_may_open_every_event_to_anyone(clients):
    client = clients.connect("/public")
    assert client.call("echo", "hi") == "hi"


def test_unknown_events_and_wrong_arguments(clients, server):
    client = clients.connect(auth={"session": session(1)})
    assert client.call("nope") == error("unknown_event", "unknown event 'nope'")
    assert client.call("touch") == error("bad_request")
    assert client.call("touch", 1, 2) == error("bad_request")
    # Names python-socketio reserves never reach a handler.
    assert client.call("connect") == error("forbidden")
    assert client.call("disconnect") == error("forbidden")
    assert client.call("refuse") == error("teapot", "I am a teapot")
    assert lines(server, "Refused event", 6) == 6


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_handler_exception_goes_to_that_client_only(clients, server):
    failing = clients.connect(auth={"session": session(1)})
    other = clients.connect(auth={"session": session(2)})
    assert failing.call("boom") == error("internal_error", "internal server error")
    failing.emit("boom")
    assert failing.next() == ("error", error("internal_error"))
    assert other.sync() == []
    assert failing.call("whoami") == ADMIN  # still connected
    assert lines(server, r"Error in event 'boom'", 2) == 2
    assert lines(server, r"^RuntimeError: boom", 2) == 2  # the tracebacks
    journal = other.call("journal")
    assert journal.count(["error", failing.sid, "boom"]) == 2  # on_error hooks


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_oversized_event_refused_without_harm_to_others(clients, server):
    big = clients.connect(auth={"session": session(1)})
    other = clients.connect(auth={"session": session(2)})
    other.call("subscribe", "room-1")
    big.call("subscribe", "room-1")
    answer = big.call("broadcast_channel", "x" * 70_000)
    assert answer == error("payload_too_large")
    assert "the limit is 65536" in answer["error"]["message"]
    assert other.sync() == []  # the handler did not run
    big.call("broadcast_channel", "small")
    assert other.sync() == [("message", "small", "room-1")]
    assert lines(server, "Refused event 'broadcast_channel'", 1) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_broadcast_channel_reaches_exactly_the_subscribers(clients):
    a, b, c, d = (clients.connect(auth={"session": session(1)}) for _ in range(4))
    assert a.call("subscribe", "room-1") is True
    assert a.call("subscribe", "room-1") is False  # already
    assert b.call("subscribe", "room-1") is True
    assert c.call("subscribe", "room-2") is True
    assert a.call("broadcast_channel", "hi") is None  # a's channels: room-1
    assert [x.sync() for x in (a, b, c, d)] == [
        [],
        [("message", "hi", "room-1")],
        [],
        [],
    ]
    a.call("broadcast_channel", "to-2", "room-2")
    assert [x.sync() for x in (a, b, c, d)] == [
        [],
        [],
        [("message", "to-2", "room-2")],
        [],
    ]
    a.call("send_and_broadcast_channel", "all-1")
    assert [x.sync() for x in (a, b, c, d)] == [
        [("message", "all-1", "room-1")],
        [("message", "all-1", "room-1")],
        [],
        [],
    ]
    # Not subscribed to room-2, a still gets what it sends on it.
    a.call("send_and_broadcast_channel", "both-2", "room-2")
    assert [x.sync() for x in (a, b, c, d)] == [
        [("message", "both-2", "room-2")],
        [],
        [("message", "both-2", "room-2")],
        [],
    ]
    assert b.call("unsubscribe", "room-1") is True
    assert b.call("unsubscribe", "room-1") is False
    a.call("broadcast_channel", "after")
    assert b.sync() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_broadcast_skips_the_sender(clients):
    a, b, c = (clients.connect(auth={"session": session(1)}) for _ in range(3))
    anonymous = clients.connect()
    a.call("broadcast", "news")
    assert [x.sync() for x in (a, b, c)] == [[], [("message", "news")]] + [
        [("message", "news")]
    ]
    a.call("send_and_broadcast", "all")
    assert [x.sync() for x in (a, b, c)] == [[("message", "all")]] * 3
    a.call("send", "me")
    assert [x.sync() for x in (a, b, c)] == [[("message", "me")], [], []]
    # A broadcast reaches anonymous sockets of the namespace too.
    assert anonymous.next() == ("message", "news")


def test_user_channels_belong_to_their_user(clients, server):
    admin = clients.connect(auth={"session": session(1)})
    bob = clients.connect(auth={"session": session(2)})
    anonymous = clients.connect()
    assert admin.call("subscribe", "user:2") == error(
        "forbidden", "cannot subscribe to 'user:2'"
    )
    assert anonymous.call("subscribe", "user:1") == error("forbidden")
    assert anonymous.call("subscribe", "room-1") == error("forbidden")
    assert admin.call("subscribe", "user:1") is True
    assert bob.call("subscribe", "user:2") is True
    bob.call("broadcast_channel", "secret", "user:2")
    assert admin.sync() == []
    assert admin.call("channels") == ["user:1"]
    # Another socket's own room is no channel.
    assert admin.call("subscribe", bob.sid) == error("forbidden")
    assert admin.call("subscribe", 42) == error("bad_request")
    assert lines(server, "Refused event 'subscribe'", 5) == 5


def test_channel_hooks_fire_for_matching_channels_only(clients):
    client = clients.connect(auth={"session": session(1)})
    client.call("subscribe", "desk-1")
    assert client.call("hooks") == ["connect", "subscribe"]
    client.call("subscribe", "room-1")
    assert client.call("hooks")[2:] == ["subscribe", "room subscribe"]
    client.call("message", "on room", "room-1")
    assert client.call("hooks")[4:] == ["message", "room message"]
    client.call("message", "on desk", "desk-1")
    assert client.call("hooks")[6:] == ["message", "desk message"]
    # Without a channel, a bound hook runs if any channel of the socket
    # matches.
    client.call("message", "no channel")
    assert client.call("hooks")[8:] == ["message", "room message", "desk message"]
    client.call("unsubscribe", "desk-1")
    client.call("unsubscribe", "room-1")
    assert client.call("hooks")[11:] == ["room unsubscribe"]
    client.call("message", "alone")
    assert client.call("hooks")[12:] == ["message"]
    assert client.call("message", "x", "room-9") == error(
        "forbidden", "not subscribed to 'room-9'"
    )


def test_a_hook_relays_messages_on_its_channel(clients):
    a, b, c = (clients.connect(auth={"session": session(1)}) for _ in range(3))
    a.call("subscribe", "relay")
    b.call("subscribe", "relay")
    a.emit("message", {"text": "hello"}, "relay")  # socket.send(m, channel)
    assert b.next() == ("message", {"text": "hello"}, "relay")
    assert a.sync() == [] and c.sync() == []


def test_disconnection_runs_hooks_in_order(clients, wait_until):
    leaving = clients.connect(auth={"session": session(1)})
    watcher = clients.connect(auth={"session": session(2)})
    leaving.call("subscribe", "room-1")
    leaving.call("subscribe", "desk-1")
    sid = leaving.sid
    leaving.close()

    def teardown():
        journal = watcher.call("journal")
        return [entry[0] for entry in journal if sid in entry[1:2]]

    # The client does not wait for the server to process its leaving.
    expected = [
        "on_connect",
        "connect",
        "subscribe",
        "room subscribe",
        "subscribe",
        "on_disconnect",
        "disconnect",
        "room unsubscribe",
        "finish",
    ]
    wait_until(lambda: teardown() == expected)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_greenlet_outlives_its_socket(clients, server, wait_until):
    owner = clients.connect(auth={"session": session(1)})
    other = clients.connect(auth={"session": session(2)})
    assert owner.call("sleepers", 3) == 4  # and the handler itself
    owner.emit("block")
    wait_until(lambda: ["block", owner.sid] in other.call("journal"))
    assert health(server)["greenlets"] == 4
    owner.close()
    wait_until(lambda: health(server)["greenlets"] == 0)
    assert health(server)["clients"] == 1
    assert other.call("whoami")["uid"] == 2
    assert count_lines(server, "still alive") == 0


def test_a_handler_may_disconnect_its_own_socket(clients, server, wait_until):
    leaving = clients.connect(auth={"session": session(1)})
    watcher = clients.connect(auth={"session": session(2)})
    sid = leaving.sid
    leaving.emit("leave")  # its acknowledgement would come too late
    wait_until(lambda: not leaving.sio.namespaces)
    # The handler went on after the teardown: it did not kill itself.
    wait_until(lambda: ["left", sid] in watcher.call("journal"))
    journal = watcher.call("journal")
    assert ["on_disconnect", sid, "server disconnect"] in journal
    assert journal.index(["finish", sid]) < journal.index(["left", sid])
    wait_until(lambda: health(server)["greenlets"] == 0)


def test_a_failing_greenlet_is_logged_and_reported(clients, server):
    client = clients.connect(auth={"session": session(1)})
    assert client.call("failing_greenlet") == "joined"
    assert ["error", client.sid, "failing greenlet"] in client.call("journal")
    assert lines(server, r"Error in greenlet fail of <Chat", 1) == 1
    assert lines(server, r"^ValueError: failing greenlet", 1) == 1
    assert health(server)["greenlets"] == 0


def test_on_connect_may_refuse(clients, server, wait_until):
    bystander = clients.connect(auth={"session": session(2)})
    refusal = clients.new("/refusing").refused()
    assert refusal == {"message": "go away", "data": {"code": "closed"}}
    assert lines(server, r"Refused <Refusing /refusing .*: go away", 1) == 1
    # The greenlet it spawned before refusing is gone, and no hook ran.
    wait_until(lambda: health(server)["greenlets"] == 0)
    assert not [e for e in bystander.call("journal") if e[0] == "disconnect"]


def test_a_failing_on_connect_refuses_with_an_internal_error(clients, server):
    refusal = clients.new("/broken").refused()
    assert refusal == {
        "message": "internal server error",
        "data": {"code": "internal_error"},
    }
    assert lines(server, r"^RuntimeError: broken on_connect", 1) == 1


def test_a_database_that_cannot_serve_is_no_internal_error(clients, server):
    client = clients.connect(auth={"session": session(1)})
    assert client.call("unavailable") == error(
        "unavailable", "service unavailable, try again later"
    )
    pattern = r"Cannot serve event 'unavailable' .*: database 'oe' unavailable"
    assert lines(server, pattern, 1) == 1
    assert count_lines(server, "Traceback") == 0


def test_the_default_namespace_serves_the_base_class(clients):
    client = clients.connect("/")
    assert client.call("subscribe", "room-1") == error("forbidden")
    assert client.call("whoami") == error("forbidden")
    # No authenticator is configured for it (the tests' is the class's).
    refusal = clients.new("/", auth={"session": session(1)}).refused()
    assert refusal == {
        "message": "this server cannot check sessions",
        "data": {"code": "authentication_failed"},
    }
