"""The real-time server with real Tryton sessions and real clients.

Users log in to trytond over JSON-RPC, then connect to oe_web_socketio with
the session, as the Tryton web client would: with the python-socketio client
and with the Node socket.io-client, over WebSocket and over polling. The
namespaces are the example chat (``/chat``, from its entry point) and the
base ``Namespace`` at ``/`` (the seed's flow: connect, then ``session_id``).
"""

from __future__ import annotations

import base64
import time

import pytest
import socketio

from .nodeclient import ConnectRefused, NodeClient
from .realtime import RealtimeServer, Recorder
from .tryton import new_password

TRANSPORTS = ("websocket", "polling")


@pytest.fixture(scope="module")
def realtime(appliance, trytond, tmp_path_factory):
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        tmp_path_factory.mktemp("realtime") / "oe_web_socketio.log",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def users(trytond):
    """Three sessions of three users."""
    sessions = []
    for name in ("ana", "ben", "cyd"):
        password = new_password()
        trytond.create_user(f"rt_{name}", password)
        sessions.append(trytond.login(f"rt_{name}", password))
    return sessions


def chat(realtime, session, transport="websocket") -> Recorder:
    return Recorder(realtime.url, "/chat", transport, auth={"session": session.header})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_session_from_jsonrpc_login_connects_and_subscribes(
    realtime, users, transport
):
    ana = chat(realtime, users[0], transport)
    try:
        assert ana.client.transport() == transport
        assert ana.call("subscribe", "room-hello") is True
        line = ana.wait_message(lambda line, channel: line["type"] == "join")
        assert line == (
            {
                "type": "join",
                "room": "room-hello",
                "login": "rt_ana",
                "uid": users[0].uid,
            },
            "room-hello",
        )
    finally:
        ana.disconnect()


@pytest.mark.parametrize(
    "auth, reason",
    [
        (None, "authentication required"),
        ({"session": "bm90IGEgc2Vzc2lvbg=="}, "malformed session"),
    ],
)
def test_the_chat_refuses_a_client_without_a_valid_session(realtime, auth, reason):
    client = socketio.Client(reconnection=False)
    errors = []
    client.on("connect_error", errors.append, namespace="/chat")
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(realtime.url, namespaces=["/chat"], auth=auth, wait_timeout=10)
    assert errors, "the client was not told why"
    assert reason in str(errors[0])


def test_a_forged_key_is_refused(realtime, users):
    ana = users[0]
    forged = base64.b64encode(f"{ana.login}:{ana.uid}:{'0' * 64}".encode()).decode()
    with pytest.raises(socketio.exceptions.ConnectionError):
        Recorder(realtime.url, "/chat", "websocket", auth={"session": forged})


def test_another_users_key_is_refused(realtime, users):
    ana, ben = users[0], users[1]
    stolen = base64.b64encode(f"{ana.login}:{ana.uid}:{ben.key}".encode()).decode()
    with pytest.raises(socketio.exceptions.ConnectionError):
        Recorder(realtime.url, "/chat", "websocket", auth={"session": stolen})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_acl_holds_until_session_id_lifts_it(realtime, users, transport):
    ana = users[0]
    anonymous = Recorder(realtime.url, "/", transport)
    try:
        refused = anonymous.call("subscribe", "news")
        assert refused["error"]["code"] == "forbidden"
        who = anonymous.call("session_id", ana.header)
        assert who == {"uid": ana.uid, "login": ana.login, "db": realtime_db(realtime)}
        assert anonymous.call("subscribe", "news") is True
    finally:
        anonymous.disconnect()


def realtime_db(realtime) -> str:
    return realtime.health()["databases"][0]


def test_a_broadcast_reaches_exactly_the_subscribed_sockets(realtime, users):
    ana, ben, cyd = (chat(realtime, s) for s in users)
    try:
        assert ana.call("subscribe", "room-x") is True
        assert ben.call("subscribe", "room-x") is True
        assert cyd.call("subscribe", "room-y") is True
        ana.call("message", "hello x", "room-x")
        said = lambda line, channel: line["type"] == "say"  # noqa: E731
        assert ana.wait_message(said)[0]["text"] == "hello x"
        assert ben.wait_message(said)[0]["text"] == "hello x"
        # A marker in room-y, after the line in room-x: once cyd has it,
        # it would have had the line in room-x before (one connection, one
        # order), so its absence is proven.
        cyd.call("message", "marker", "room-y")
        cyd.wait_message(lambda line, channel: line.get("text") == "marker")
        assert [m for m in cyd.messages() if m[0].get("text") == "hello x"] == []
        assert [m for m in ana.messages() if m[0].get("text") == "marker"] == []
    finally:
        for client in (ana, ben, cyd):
            client.disconnect()


def test_channel_hooks_bound_by_regex_fire_only_for_matching_channels(realtime, users):
    ana = chat(realtime, users[0])
    try:
        # user:<own id> is allowed, but the chat's join hook is bound to
        # ^room-: no join line for it.
        assert ana.call("subscribe", f"user:{users[0].uid}") is True
        assert ana.call("subscribe", "room-regex") is True
        _, channel = ana.wait_message(lambda line, channel: line["type"] == "join")
        assert channel == "room-regex"
        assert [m for m in ana.messages() if m[1] != "room-regex"] == []
    finally:
        ana.disconnect()


def test_another_users_channel_is_refused(realtime, users):
    ana = chat(realtime, users[0])
    try:
        refused = ana.call("subscribe", f"user:{users[1].uid}")
        assert refused["error"]["code"] == "forbidden"
        assert ana.call("subscribe", f"user:{users[0].uid}") is True
    finally:
        ana.disconnect()


def test_no_greenlet_outlives_its_socket(realtime, users):
    clients = [chat(realtime, session) for session in users]
    for client in clients:
        client.call("subscribe", "room-gone")
    for client in clients:
        client.disconnect()
    assert realtime.wait_greenlets(0) == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_node_client_chats_with_a_python_client(realtime, users, transport):
    ana, ben = users[0], users[1]
    python_side = chat(realtime, ben)
    try:
        assert python_side.call("subscribe", "room-node") is True
        with NodeClient(
            realtime.url,
            namespace="/chat",
            transports=(transport,),
            auth={"session": ana.header},
        ) as node:
            assert node.wait_connected()["transport"] == transport
            assert node.emit("subscribe", "room-node") == [True]
            node.emit("message", "from node", "room-node")
            line, channel = python_side.wait_message(
                lambda line, channel: line.get("text") == "from node"
            )
            assert (line["login"], channel) == (ana.login, "room-node")
            python_side.call("message", "from python", "room-node")
            received = node.wait_event("message")
            while received[0].get("text") != "from python":
                received = node.wait_event("message")
            assert received[0]["login"] == ben.login
    finally:
        python_side.disconnect()


def test_the_node_client_is_refused_without_a_session(realtime):
    with (
        NodeClient(realtime.url, namespace="/chat") as node,
        pytest.raises(ConnectRefused) as refused,
    ):
        node.wait_connected()
    assert "authentication required" in refused.value.message


# -- sessions that end while connected --------------------------------------


@pytest.fixture(scope="module")
def watching(appliance, trytond, tmp_path_factory):
    """A server checking connected sessions every 0.3 s."""
    directory = tmp_path_factory.mktemp("watching")
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        directory / "oe_web_socketio.log",
        settings={"session_check_interval": 0.3},
    )
    yield server
    server.stop()


def wait_until(condition, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_socket_whose_session_ends_is_told_and_disconnected(
    watching, trytond, transport
):
    """Logged out over JSON-RPC while connected: the server tells the
    socket why and ends it; a socket of a live session of the same user
    stays, and so does the check (the next round still runs)."""
    password = new_password()
    login = f"rt_watch_{transport}"
    trytond.create_user(login, password)
    leaving = trytond.login(login, password)
    staying = trytond.login(login, password)
    gone = chat(watching, leaving, transport)
    kept = chat(watching, staying, transport)
    try:
        assert gone.call("subscribe", "room-watch") is True
        trytond.logout(leaving)
        assert wait_until(lambda: not gone.client.connected)
        errors = [args for event, args in gone.received if event == "error"]
        assert errors == [
            (
                {
                    "error": {
                        "code": "authentication_failed",
                        "message": "invalid or expired session",
                    }
                },
            )
        ]
        # Several rounds later, the live session's socket is still served.
        ended = watching.health()["sessions"]["ended"]
        assert ended >= 1
        time.sleep(1)
        assert kept.client.connected
        assert kept.call("subscribe", "room-watch") is True
        assert watching.log.read_text().count("Session of") == ended
    finally:
        kept.disconnect()
        if gone.client.connected:
            gone.disconnect()


def test_a_deactivated_user_is_disconnected(watching, trytond):
    password = new_password()
    uid = trytond.create_user("rt_watch_deactivated", password)
    session = trytond.login("rt_watch_deactivated", password)
    socket = chat(watching, session)
    try:
        trytond.rpc(
            "model.res.user.write",
            [[uid], {"active": False}, {}],
            session=trytond.admin,
        )
        assert wait_until(lambda: not socket.client.connected)
        assert (
            "error",
            (
                {
                    "error": {
                        "code": "authentication_failed",
                        "message": "invalid or expired session",
                    }
                },
            ),
        ) in socket.received
    finally:
        if socket.client.connected:
            socket.disconnect()
