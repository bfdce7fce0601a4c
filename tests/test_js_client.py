"""The browser client (js/, the bundle ``make build`` puts in the egg's
``static/``) in headless Chromium against a real ``bin/oe_web_socketio``.

Each page loads the bundle from the server under test, same origin (the
server serves it at ``/oe_web_socketio/oe_web_socketio.js``), and drives a
``SocketIO`` that records its ``status``, ``message`` and ``resync`` events
in ``window.log``. Messages are published in the database as ERP code does
(:func:`oe_web_socketio.outbox.publish`, the SQL of the Tryton module), out
of band. Network cuts go through a :class:`~tests.tcpproxy.TcpProxy`
between the browser and the server. Every wait is bounded; nothing here
measures time.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oe_web_socketio import outbox
from oe_web_socketio.static import BUNDLE, STATIC
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from .appliance import ROOT
from .browser import console_recorder
from .longpolling_server import LongPollingServer
from .realtime import RealtimeServer
from .tcpproxy import TcpProxy
from .tryton import Session, Trytond, new_password

pytestmark = pytest.mark.timeout(240)

#: Milliseconds a page waits for what should come at once.
WAIT_MS = 20_000

#: Seconds the network stays cut.
CUT_SECONDS = 5

#: The bundle's path on every server.
BUNDLE_PATH = f"/oe_web_socketio/{BUNDLE}"

#: Quick reconnections for the tests (the defaults are for real pages).
FAST = {"reconnectionDelay": 200, "reconnectionDelayMax": 1000}

#: Creates window.s, a SocketIO that records its events in window.log.
OPEN = """
([namespace, options]) => {
  window.log = [];
  const s = new SocketIO(namespace, options);
  s.on("status", (state, detail) => log.push({type: "status", state, detail}));
  s.on("message", (message, channel, position) =>
    log.push({type: "message", message, channel, position}));
  s.on("resync", (info) => log.push({type: "resync", info}));
  window.s = s;
}
"""


@pytest.fixture(scope="module")
def bundle() -> None:
    if not (STATIC / BUNDLE).is_file():
        pytest.fail(f"{STATIC / BUNDLE} is missing: run `make build`")


@pytest.fixture(scope="module")
def realtime(appliance, trytond, bundle, tmp_path_factory) -> Iterator[RealtimeServer]:
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        tmp_path_factory.mktemp("js") / "oe_web_socketio.log",
    )
    wait_listening(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def user(trytond: Trytond) -> Session:
    password = new_password()
    trytond.create_user("js_client_user", password)
    return trytond.login("js_client_user", password)


@pytest.fixture
def channel(request) -> str:
    """A channel of this test alone."""
    return f"js-{request.node.name[:40]}-{time.monotonic_ns()}"


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    page.console_lines = console_recorder(page)
    return page


def wait_listening(server: RealtimeServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listeners = server.health()["listeners"]
        if listeners and all(s["state"] == "listening" for s in listeners.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"listeners not listening: {listeners}")
        time.sleep(0.05)


def load(page, origin: str) -> None:
    """Open a page of *origin* and load the bundle from there."""
    page.goto(f"{origin}/health")
    page.add_script_tag(url=BUNDLE_PATH)
    assert page.evaluate("typeof SocketIO") == "function"


def open_socket(page, origin: str, session: Session | None, **options) -> None:
    load(page, origin)
    if session is not None:
        options["session"] = session.header
    page.evaluate(OPEN, ["/", {**FAST, **options}])


def wait(page, expression: str, arg=None, timeout: int = WAIT_MS) -> None:
    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout)
    except PlaywrightTimeoutError as exc:
        log = page.evaluate("window.log ?? null")
        raise AssertionError(
            f"{expression} not true: {exc}\nlog: {log}\nconsole: {page.console_lines}"
        ) from None


def wait_seen(page, condition, failure) -> None:
    """Wait until *condition()* holds of what the test records of *page*'s
    events, which Playwright dispatches only while the test calls it."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, failure
        page.wait_for_timeout(20)


def wait_status(page, state: str, timeout: int = WAIT_MS) -> None:
    wait(page, "(state) => window.s.status === state", state, timeout)


def received(page, channel: str) -> list[tuple]:
    return [
        (entry["message"], entry["position"])
        for entry in page.evaluate("window.log")
        if entry["type"] == "message" and entry["channel"] == channel
    ]


def wait_received(page, channel: str, count: int) -> list[tuple]:
    wait(
        page,
        "([c, n]) => log.filter(e => e.type === 'message' && e.channel === c)"
        ".length >= n",
        [channel, count],
    )
    return received(page, channel)


def socketio_requests(page) -> list[str]:
    """The URLs of the Socket.IO requests *page* makes from now on."""
    requests: list[str] = []
    page.on(
        "request", lambda r: requests.append(r.url) if "/socket.io/" in r.url else 0
    )
    return requests


def sent_packets(page, part: str) -> list[str]:
    """The packets containing *part* that *page* sends from now on, by
    polling or WebSocket."""
    sent: list[str] = []

    def on_request(request) -> None:
        if "/socket.io/" in request.url and part in (request.post_data or ""):
            sent.append(request.post_data)

    def on_frame(payload) -> None:
        if isinstance(payload, str) and part in payload:
            sent.append(payload)

    page.on("request", on_request)
    page.on("websocket", lambda ws: ws.on("framesent", on_frame))
    return sent


def statuses(page) -> list[str]:
    return [e["state"] for e in page.evaluate("window.log") if e["type"] == "status"]


def publish(tryton_db, *messages, channel=None) -> None:
    """Publish *messages*, one transaction each, as the ERP does."""
    with tryton_db.connect() as conn:
        for message in messages:
            with conn.transaction():
                outbox.publish(conn.cursor(), message, channel)


def number(position: str) -> int:
    return int(position.rpartition(":")[2])


def assert_once_in_order(got: list[tuple], expected: list) -> None:
    assert [message for message, _ in got] == expected
    numbers = [number(position) for _, position in got]
    assert numbers == sorted(set(numbers))


# -- the logic, in Node.js ---------------------------------------------------


def test_ordering_logic_in_node():
    """tests/node/socketio-logic.test.mjs: held and live messages, resync,
    positions, the auth payload, server disconnects (node's own test runner)."""
    node = shutil.which("node")
    assert node, "node is not on PATH: `make build` installs it"
    result = subprocess.run(
        [node, "--test", str(ROOT / "tests" / "node" / "socketio-logic.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
    assert "# pass 7" in result.stdout


# -- the API ----------------------------------------------------------------


def test_emit_acknowledged_by_callback_and_by_promise(page, realtime, user, channel):
    open_socket(page, realtime.url, user)
    wait_status(page, "connected")
    answers = page.evaluate(
        """async (channel) => {
          const byCallback = await new Promise(
            (resolve) => s.emit("subscribe", channel, (answer) => resolve(answer)));
          const byPromise = await s.emit("subscribe", channel);
          let refused = null;
          try { await s.emit("no_such_event", 1); }
          catch (error) { refused = [error.name, error.code, error.message]; }
          return {byCallback, byPromise, refused};
        }""",
        channel,
    )
    assert answers["byCallback"] is True  # subscribed
    assert answers["byPromise"] is False  # already subscribed
    name, code, message = answers["refused"]
    assert (name, code) == ("SocketIOError", "unknown_event")
    assert "no_such_event" in message


def test_only_subscribed_channels_arrive(page, realtime, user, tryton_db, channel):
    other = f"{channel}-other"
    open_socket(page, realtime.url, user)
    wait_status(page, "connected")
    assert page.evaluate("(c) => s.subscribe(c)", channel) is True
    publish(tryton_db, "a1", channel=channel)
    publish(tryton_db, "not subscribed", channel=other)
    publish(tryton_db, "a2", channel=channel)
    assert [m for m, _ in wait_received(page, channel, 2)] == ["a1", "a2"]
    assert page.evaluate("(c) => s.unsubscribe(c)", channel) is True
    assert page.evaluate("s.channels") == []
    publish(tryton_db, "after unsubscribe", channel=channel)
    publish(tryton_db, "marker")  # a broadcast reaches every socket
    wait(page, "() => log.some(e => e.type === 'message' && e.message === 'marker')")
    assert [m for m, _ in received(page, channel)] == ["a1", "a2"]
    assert received(page, other) == []
    # Bridge messages carry their position, and "marker" came last.
    positions = [e["position"] for e in page.evaluate("log") if e["type"] == "message"]
    assert page.evaluate("s.lastPosition") == positions[-1]


def test_a_position_the_server_cannot_replay_fires_resync(
    page, realtime, user, tryton_db, channel
):
    open_socket(page, realtime.url, user, autoConnect=False, channels=[channel])
    # As if the page had seen a message of another database's outbox.
    page.evaluate("() => { s.lastPosition = 'another-epoch:7'; s.connect(); }")
    wait_status(page, "connected")
    resyncs = [e["info"] for e in page.evaluate("log") if e["type"] == "resync"]
    assert len(resyncs) == 1
    assert resyncs[0]["resync"] is True
    assert resyncs[0]["reason"] == "a position of another database"
    assert page.evaluate("s.lastPosition") == resyncs[0]["position"]
    # The channel of the options was subscribed by the resume.
    publish(tryton_db, "live", channel=channel)
    assert [m for m, _ in wait_received(page, channel, 1)] == ["live"]


def test_longpolling_socket_is_one_object_per_page(page, realtime, user):
    load(page, realtime.url)
    # A second copy of the bundle on the page shares it too.
    page.add_script_tag(url=BUNDLE_PATH)
    same = page.evaluate(
        """(session) => {
          const a = longpolling_socket({session, reconnectionDelayMax: 1000});
          const b = longpolling_socket();
          window.s = a;
          return a === b && a instanceof SocketIO && a.namespace === "/"
            && oe_web_socketio.longpolling_socket() === a;
        }""",
        user.header,
    )
    assert same is True
    wait_status(page, "connected")
    assert page.evaluate("typeof start_longpolling") == "function"


# -- bad input ----------------------------------------------------------------


def test_a_refused_session_says_why_and_a_new_session_connects(
    page, realtime, trytond, user
):
    password = new_password()
    trytond.create_user("js_client_gone", password)
    gone = trytond.login("js_client_gone", password)
    trytond.logout(gone)  # its session is deleted, as an expired one
    requests = socketio_requests(page)
    open_socket(page, realtime.url, gone)
    wait_status(page, "refused")
    refused = [e for e in page.evaluate("log") if e["type"] == "status"][-1]
    assert refused["detail"] == "invalid or expired session"
    # Refused is final for this session: no new attempt comes.
    count = len(requests)
    page.wait_for_timeout(2000)
    assert len(requests) == count
    assert page.evaluate("s.status") == "refused"
    # A forged session too, with the server's reason.
    forged = base64.b64encode(f"{user.login}:{user.uid}:{'0' * 64}".encode()).decode()
    page.evaluate("(session) => s.setSession(session)", forged)
    wait_status(page, "refused")
    page.evaluate("(session) => s.setSession(session)", user.header)
    wait_status(page, "connected")
    assert statuses(page) == [
        "connecting",
        "refused",
        "connecting",
        "refused",
        "connecting",
        "connected",
    ]


def test_a_session_ended_while_connected_is_refused_until_a_new_one(
    page, appliance, trytond, bundle, tmp_path
):
    """Logged out in another tab while connected: the server (checking
    sessions every 0.3 s here) ends the socket, the page sees "refused"
    with the reason and asks nothing more; a new session connects."""
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        tmp_path / "oe_web_socketio.log",
        settings={"session_check_interval": 0.3},
    )
    try:
        password = new_password()
        trytond.create_user("js_client_ends", password)
        ending = trytond.login("js_client_ends", password)
        open_socket(page, server.url, ending)
        wait_status(page, "connected")
        trytond.logout(ending)
        wait_status(page, "refused")
        refused = [e for e in page.evaluate("log") if e["type"] == "status"][-1]
        assert refused["detail"] == "invalid or expired session"
        requests = socketio_requests(page)
        page.wait_for_timeout(2000)
        assert requests == []
        assert page.evaluate("s.status") == "refused"
        again = trytond.login("js_client_ends", password)
        page.evaluate("(session) => s.setSession(session)", again.header)
        wait_status(page, "connected")
        assert statuses(page) == [
            "connecting",
            "connected",
            "refused",
            "connecting",
            "connected",
        ]
    finally:
        server.stop()


def test_a_server_without_its_database_refuses_then_lets_in_by_itself(
    page, tryton_db, user, bundle, tmp_path
):
    """The server cannot check sessions while PostgreSQL is out of reach:
    it refuses as unavailable, and the client asks again, slowly, until it
    is let in."""
    socket_directory = re.search(r"host=([^&]+)", tryton_db.uri).group(1)
    database = TcpProxy(str(Path(socket_directory) / ".s.PGSQL.5432"))
    database.restore()
    conf = tmp_path / "trytond.conf"
    conf.write_text(
        tryton_db.trytond_conf.read_text().replace(
            tryton_db.uri, f"postgresql://tryton@127.0.0.1:{database.port}/"
        )
    )
    server = LongPollingServer(
        tmp_path, tryton_db.name, trytond_config=conf, settings={"pool_timeout": 1}
    )
    try:
        load(page, server.url)
        database.cut()
        page.evaluate(
            OPEN,
            ["/", {"session": user.header, "refusedRetryDelay": 300, **FAST}],
        )
        wait_status(page, "refused")
        refused = [e for e in page.evaluate("log") if e["type"] == "status"][-1]
        assert refused["detail"] == "service unavailable, try again later"
        # It asks again by itself.
        wait(page, "() => log.filter(e => e.state === 'refused').length >= 2")
        database.restore()
        wait_status(page, "connected", timeout=60_000)
        assert statuses(page)[:2] == ["connecting", "refused"]
    finally:
        server.stop()
        database.close()


# -- recovery -------------------------------------------------------------------


def cut_and_restore(page, proxy: TcpProxy, tryton_db, channel: str) -> None:
    """Cut the network for CUT_SECONDS while 20 messages are published;
    every one arrives once, in order, after it is restored."""
    publish(tryton_db, 0, channel=channel)
    wait_received(page, channel, 1)
    cut_at = time.monotonic()
    proxy.cut()
    wait_status(page, "reconnecting")
    publish(tryton_db, *range(1, 21), channel=channel)
    publish(tryton_db, "not subscribed", channel=f"{channel}-x")
    # An event the page emits during the cut, which the server accepts
    # only on a subscribed channel: sent once the channel is subscribed
    # again, not before.
    page.evaluate(
        """(c) => { window.sent = s.emit("message", "typed offline", c)
             .then(() => "sent", (error) => `${error.code}: ${error.message}`); }""",
        channel,
    )
    time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
    assert len(received(page, channel)) == 1  # nothing came through the cut
    proxy.restore()
    wait_status(page, "connected", timeout=60_000)
    assert page.evaluate("() => window.sent") == "sent"
    publish(tryton_db, 21, channel=channel)
    got = wait_received(page, channel, 22)
    # A broadcast after the last one: nothing of the channel may follow.
    publish(tryton_db, "end")
    wait(page, "() => log.some(e => e.type === 'message' && e.message === 'end')")
    got = received(page, channel)
    assert_once_in_order(got, list(range(22)))
    assert received(page, f"{channel}-x") == []
    assert [e for e in page.evaluate("log") if e["type"] == "resync"] == []


def test_a_network_cut_loses_and_repeats_nothing(
    page, realtime, user, tryton_db, channel
):
    proxy = TcpProxy(("127.0.0.1", realtime.port))
    proxy.restore()
    try:
        open_socket(page, proxy.url, user)
        wait_status(page, "connected")
        page.evaluate("(c) => s.subscribe(c)", channel)
        wait(page, "() => s.transport === 'websocket'")
        cut_and_restore(page, proxy, tryton_db, channel)
        assert "reconnecting" in statuses(page)
    finally:
        proxy.close()


def test_with_websocket_blocked_polling_survives_a_cut(
    page, realtime, user, tryton_db, channel
):
    blocked: list[str] = []

    def refuse(ws) -> None:
        blocked.append(ws.url)
        ws.close(code=1011, reason="blocked by the test")

    page.route_web_socket(re.compile(r"/socket\.io/"), refuse)
    proxy = TcpProxy(("127.0.0.1", realtime.port))
    proxy.restore()
    try:
        open_socket(page, proxy.url, user)
        wait_status(page, "connected")
        page.evaluate("(c) => s.subscribe(c)", channel)
        cut_and_restore(page, proxy, tryton_db, channel)
        assert blocked, "the client never tried WebSocket"
        assert page.evaluate("s.transport") == "polling"
    finally:
        proxy.close()


def test_the_server_restarted_on_its_port_delivers_what_was_missed(
    page, appliance, trytond, user, tryton_db, bundle, channel, tmp_path
):
    log = tmp_path / "oe_web_socketio.log"
    server = RealtimeServer(appliance.directory, trytond.database, log)
    try:
        wait_listening(server)
        open_socket(page, server.url, user)
        wait_status(page, "connected")
        page.evaluate("(c) => s.subscribe(c)", channel)
        publish(tryton_db, 0, channel=channel)
        wait_received(page, channel, 1)
        server.stop()
        wait_status(page, "reconnecting")
        publish(tryton_db, *range(1, 11), channel=channel)
        server = RealtimeServer(
            appliance.directory, trytond.database, log, port=server.port
        )
        wait_status(page, "connected", timeout=60_000)
        publish(tryton_db, 11, channel=channel)
        wait_received(page, channel, 12)
        publish(tryton_db, "end")
        wait(page, "() => log.some(e => e.type === 'message' && e.message === 'end')")
        assert_once_in_order(received(page, channel), list(range(12)))
        states = statuses(page)
        assert states[:2] == ["connecting", "connected"]
        assert "reconnecting" in states
        assert states[-1] == "connected"
    finally:
        server.stop()


def ahead_of(position: str, count: int) -> str:
    """The position *count* messages after *position*: what a page that
    was served by a server ahead of this one may hold."""
    epoch, _, n = position.rpartition(":")
    return f"{epoch}:{int(n) + count}"


def reconnect_at(page, position: str, **options) -> None:
    """Disconnect, set the page's last position and *options*, connect."""
    page.evaluate(
        """([position, options]) => {
          s.disconnect();
          Object.assign(s.options, options);
          s.lastPosition = position;
          log.length = 0;
          s.connect();
        }""",
        [position, options],
    )


def test_an_unanswered_resume_starts_over_on_a_new_connection(
    page, realtime, user, tryton_db, channel
):
    """A position far ahead of the server: it waits (oe_web_socketio.resume.WAIT,
    2 s) before it answers. A client with a shorter resumeTimeout closes
    the connection and starts over on a new one, again and again, and is
    never "connected" meanwhile; given time, it hears the resync."""
    open_socket(page, realtime.url, user, channels=[channel])
    wait_status(page, "connected")
    publish(tryton_db, "m0", channel=channel)
    [(_, position)] = wait_received(page, channel, 1)
    requests = socketio_requests(page)

    def handshakes() -> int:
        # Each start is a new Engine.IO session: a request without sid.
        return sum("sid=" not in url for url in requests)

    reconnect_at(page, ahead_of(position, 1000), resumeTimeout=300)
    wait_seen(page, lambda: handshakes() >= 3, requests)
    assert statuses(page)[:2] == ["connecting", "reconnecting"]
    assert "connected" not in statuses(page)
    assert page.evaluate("log.filter(e => e.type === 'resync').length") == 0
    page.evaluate("s.options.resumeTimeout = 30000")
    wait_status(page, "connected")
    resyncs = [e["info"] for e in page.evaluate("log") if e["type"] == "resync"]
    assert [r["reason"] for r in resyncs] == ["a position from the future"]
    assert page.evaluate("s.lastPosition") == resyncs[0]["position"]
    publish(tryton_db, "after the resync", channel=channel)
    wait(page, "() => log.some(e => e.message === 'after the resync')")
    assert [m for m, _ in received(page, channel)] == ["after the resync"]


def test_a_position_the_server_reaches_soon_is_served_without_resync(
    page, realtime, user, tryton_db, channel
):
    """The page saw two messages this server has not delivered yet (as if
    another server were ahead): the server waits for them instead of
    resyncing, and neither reaches the page a second time."""
    open_socket(page, realtime.url, user, channels=[channel])
    wait_status(page, "connected")
    publish(tryton_db, "m0", channel=channel)
    [(_, position)] = wait_received(page, channel, 1)
    wait(page, "() => s.transport === 'websocket'")
    resumes = sent_packets(page, '"resume"')
    reconnect_at(page, ahead_of(position, 2))
    wait_seen(page, lambda: resumes, "the page sent no resume")
    # The resume is on its way: what it waits for is published now.
    publish(tryton_db, "m1", "m2", channel=channel)
    wait_status(page, "connected")
    publish(tryton_db, "m3", channel=channel)
    got = wait_received(page, channel, 1)
    assert [m for m, _ in got] == ["m3"]
    assert number(got[0][1]) == number(position) + 3
    assert [e for e in page.evaluate("log") if e["type"] == "resync"] == []
    # The WebSocket closed by disconnect() ended with frames only.
    assert [line for line in page.console_lines if "WebSocket" in line] == []


# -- served by the appliance ------------------------------------------------------


def test_the_appliance_serves_the_bundle_through_nginx(page, appliance):
    response = page.goto(f"{appliance.url}{BUNDLE_PATH}")
    assert response.status == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers.get("etag")
    page.add_script_tag(url=BUNDLE_PATH)
    page.evaluate(
        OPEN,
        ["/", {**FAST, "session": appliance.login(), "database": appliance.database}],
    )
    wait_status(page, "connected")
    wait(page, "() => s.transport === 'websocket'")
    missing = page.request.get(f"{appliance.url}/oe_web_socketio/nope.js")
    assert missing.status == 404
