"""The demo at /demo/, end to end: headless Chromium through the appliance's
nginx, two Tryton users of their own, parties changed over JSON-RPC.

What runs for real: nginx serving the page and the bundle, trytond (login,
JSON-RPC, the module web_socketio_demo publishing party changes in its
transactions), oe_web_socketio's /demo namespace and database bridge,
PostgreSQL, the browser's socket.io-client. The network cut is a TCP proxy
between the browser and nginx (tests/tcpproxy.py); the server down is
``supervisorctl stop oe_web_socketio``.

No test asserts a duration: waits are bounded, and the latency of a party
rename reaching the page is printed (``-s`` shows it).
"""

from __future__ import annotations

import contextlib
import secrets
import time

import pytest
import socketio

from tests.browser import console_recorder, screenshot

pytestmark = pytest.mark.timeout(300)

#: Milliseconds a page may take to show what the server pushed: generous
#: for a loaded 2-core machine, never a measure.
SHOWN = 20_000
#: Milliseconds the page may take to learn that its session ended: the
#: appliance checks sessions every 10 s.
EXPIRED = 45_000
#: Milliseconds the page may take to find the real-time server again after
#: it came back (socket.io-client's backoff tops at 15 s, ± 50 % jitter).
RECOVERED = 60_000


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


# --- users, parties, clients


@pytest.fixture(scope="module")
def admin(appliance):
    return appliance.login()


@pytest.fixture(scope="module")
def token():
    """Short and unique to this run: in logins and party names."""
    return secrets.token_hex(3)


@pytest.fixture(scope="module")
def users(appliance, admin, token):
    """Two users of this test module: {nickname: (login, password, name)};
    archived afterwards."""
    made = {}
    for nickname, name in (("ada", "Ada Lovelace"), ("grace", "Grace Hopper")):
        login = f"demo-{nickname}-{token}"
        password = f"pass-{secrets.token_hex(8)}"
        (uid,) = appliance.rpc(
            "model.res.user.create",
            [[{"login": login, "name": name, "password": password}], {}],
            admin,
        )
        made[nickname] = (login, password, name, uid)
    yield made
    ids = [uid for *_, uid in made.values()]
    appliance.rpc("model.res.user.write", [ids, {"active": False}, {}], admin)


@pytest.fixture
def parties(appliance, admin):
    """Create parties as admin: ``parties("Name")`` returns the id; they
    are deleted after the test."""
    made = []

    def create(name):
        (party_id,) = appliance.rpc(
            "model.party.party.create", [[{"name": name}], {}], admin
        )
        made.append(party_id)
        return party_id

    yield create
    if made:
        with contextlib.suppress(Exception):
            appliance.rpc("model.party.party.delete", [made, {}], admin)


def rename(appliance, admin, party_id, name):
    appliance.rpc("model.party.party.write", [[party_id], {"name": name}, {}], admin)


@contextlib.contextmanager
def sio_client(appliance, session):
    """A python-socketio client of /demo as the user of *session*; its
    ``received`` lists the ``message`` events."""
    client = socketio.Client(reconnection=False)
    client.received = []
    client.on("message", lambda *args: client.received.append(args), namespace="/demo")
    client.connect(
        appliance.url,
        namespaces=["/demo"],
        auth={"session": session, "database": appliance.database},
        transports=["websocket"],
        wait_timeout=20,
    )
    try:
        yield client
    finally:
        client.disconnect()


def call(client, event, *args):
    return client.call(event, args, namespace="/demo", timeout=20)


# --- the page


class DemoPage:
    """One browser tab of the demo."""

    def __init__(self, context, url):
        self.page = context.new_page()
        self.console = console_recorder(self.page)
        self.page.goto(f"{url}/demo/")

    def log_in(self, login, password):
        page = self.page
        expect(page.locator("#login-view")).to_be_visible()
        page.fill("#login", login)
        page.fill("#password", password)
        page.click("#login-button")

    def logged_in(self, login):
        expect(self.page.locator(f'#online li[data-login="{login}"]')).to_be_visible(
            timeout=SHOWN
        )
        expect(self.page.locator("#connection")).to_have_attribute(
            "data-state", "connected", timeout=SHOWN
        )

    def say(self, text):
        self.page.fill("#say", text)
        self.page.press("#say", "Enter")

    def lines(self, text):
        return self.page.locator("#messages .line .text", has_text=text)

    def party(self, party_id):
        return self.page.locator(f'#parties tr[data-id="{party_id}"] td.name')

    def banner(self):
        return self.page.locator("#banner")

    def transport(self):
        return self.page.evaluate("demo.socket && demo.socket.transport")


@pytest.fixture
def open_page(browser, appliance):
    """``open_page(url=None, setup=None, viewport=None)``: a tab in a
    fresh browser context (a user of its own), 1280 × 800 unless
    *viewport* says; *setup(context)* runs before the page."""
    contexts = []

    def open_(url=None, setup=None, viewport=None):
        context = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 800}
        )
        context.set_default_timeout(30_000)
        contexts.append(context)
        if setup is not None:
            setup(context)
        return DemoPage(context, url or appliance.url)

    yield open_
    for context in contexts:
        context.close()


def logged_in_page(open_page, users, nickname, **kwargs):
    page = open_page(**kwargs)
    login, password, _name, _uid = users[nickname]
    page.log_in(login, password)
    page.logged_in(login)
    return page


def session_of(appliance, users, nickname):
    login, password, *_ = users[nickname]
    return appliance.login(login, password)


# --- tests


def test_two_users_chat_and_see_a_party_renamed(
    appliance, admin, users, token, parties, open_page
):
    ada = logged_in_page(open_page, users, "ada")
    grace = logged_in_page(open_page, users, "grace")
    # Each sees the other online.
    ada.logged_in(users["grace"][0])
    grace.logged_in(users["ada"][0])

    ada.say(f"Hello Grace, {token}")
    expect(grace.lines(f"Hello Grace, {token}")).to_have_count(1, timeout=SHOWN)
    grace.say(f"Hi Ada! {token}")
    expect(ada.lines(f"Hi Ada! {token}")).to_have_count(1, timeout=SHOWN)
    expect(ada.lines(f"Hello Grace, {token}")).to_have_count(1)

    party_id = parties(f"Analytical Engines {token}")
    expect(ada.party(party_id)).to_have_text(
        f"Analytical Engines {token}", timeout=SHOWN
    )
    started = time.monotonic()
    rename(appliance, admin, party_id, f"Analytical Engines Ltd {token}")
    expect(ada.party(party_id)).to_have_text(
        f"Analytical Engines Ltd {token}", timeout=SHOWN
    )
    latency = time.monotonic() - started
    # The row that just changed stands out.
    expect(ada.page.locator(f'#parties tr[data-id="{party_id}"]')).to_have_class(
        "changed"
    )
    expect(grace.party(party_id)).to_have_text(f"Analytical Engines Ltd {token}")
    print(
        f"\nparty rename over JSON-RPC shown in the page after {latency * 1000:.0f} ms"
    )
    screenshot(ada.page, "demo")
    screenshot(grace.page, "demo-second-user")

    # A room of their own: its lines stay there.
    room = f"engines-{token}"
    for page in (ada, grace):
        page.page.fill("#room-name", room)
        page.page.press("#room-name", "Enter")
        expect(page.page.locator(f'#rooms .tab[data-room="{room}"]')).to_have_attribute(
            "aria-selected", "true", timeout=SHOWN
        )
    grace.say(f"Only in {room}")
    expect(ada.lines(f"Only in {room}")).to_have_count(1, timeout=SHOWN)
    ada.page.click('#rooms .tab[data-room="general"] button.link')
    expect(ada.lines(f"Hello Grace, {token}")).to_have_count(1)
    expect(ada.lines(f"Only in {room}")).to_have_count(0)
    # A bad room name is refused on the page, before the server.
    ada.page.fill("#room-name", "No Spaces!")
    ada.page.press("#room-name", "Enter")
    expect(ada.page.locator("#join-error")).to_be_visible()

    # A reload keeps her rooms, and each shows what was said there
    # (the room's history), once.
    ada.page.reload()
    ada.logged_in(users["ada"][0])
    expect(ada.page.locator(f'#rooms .tab[data-room="{room}"]')).to_have_count(1)
    expect(ada.page.locator('#rooms .tab[data-room="general"]')).to_have_attribute(
        "aria-selected", "true"
    )
    expect(ada.lines(f"Hello Grace, {token}")).to_have_count(1, timeout=SHOWN)
    expect(ada.lines(f"Hi Ada! {token}")).to_have_count(1)
    ada.page.click(f'#rooms .tab[data-room="{room}"] button.link')
    expect(ada.lines(f"Only in {room}")).to_have_count(1, timeout=SHOWN)
    expect(ada.lines(f"Hello Grace, {token}")).to_have_count(0)
    grace.say(f"After the reload, in {room}")
    expect(ada.lines(f"After the reload, in {room}")).to_have_count(1, timeout=SHOWN)

    # Grace leaves: Ada sees her go.
    grace.page.close()
    expect(
        ada.page.locator(f'#online li[data-login="{users["grace"][0]}"]')
    ).to_have_count(0, timeout=SHOWN)
    # Nothing went wrong on the page, not even a failed request.
    errors = [line for line in ada.console if line.startswith(("error", "pageerror"))]
    assert errors == []


def test_with_websocket_blocked_the_page_polls(
    appliance, admin, users, token, parties, open_page
):
    blocked = []

    def block_websocket(context):
        # Playwright answers the page's WebSocket itself and closes it at
        # once: socket.io-client's upgrade never succeeds.
        def refuse(route):
            blocked.append(route.url)
            route.close()

        context.route_web_socket("**/socket.io/**", refuse)

    ada = logged_in_page(open_page, users, "ada", setup=block_websocket)
    party_id = parties(f"Difference Engines {token}")
    with sio_client(appliance, session_of(appliance, users, "grace")) as grace:
        assert call(grace, "subscribe", "demo.room.general") in (True, False)
        assert call(grace, "say", "general", f"polling works? {token}") == {"ok": True}
        expect(ada.lines(f"polling works? {token}")).to_have_count(1, timeout=SHOWN)
        ada.say(f"it does {token}")
        deadline = time.monotonic() + SHOWN / 1000
        while time.monotonic() < deadline and not any(
            args[0].get("text") == f"it does {token}" for args in grace.received
        ):
            time.sleep(0.1)
        assert any(args[0].get("text") == f"it does {token}" for args in grace.received)
    rename(appliance, admin, party_id, f"Difference Engines Ltd {token}")
    expect(ada.party(party_id)).to_have_text(
        f"Difference Engines Ltd {token}", timeout=SHOWN
    )
    assert blocked, "the page never tried a WebSocket"
    assert ada.transport() == "polling"
    expect(ada.page.locator("#connection")).to_have_text("live · polling")


def test_network_cut_loses_nothing_and_shows_nothing_twice(
    appliance, admin, users, token, parties, open_page
):
    from tests.tcpproxy import TcpProxy

    proxy = TcpProxy(("127.0.0.1", appliance.http_port))
    proxy.restore()
    try:
        ada = logged_in_page(open_page, users, "ada", url=proxy.url)
        party_id = parties(f"Jacquard Looms {token}")
        expect(ada.party(party_id)).to_be_visible(timeout=SHOWN)
        with sio_client(appliance, session_of(appliance, users, "grace")) as grace:
            call(grace, "subscribe", "demo.room.general")
            proxy.cut()
            expect(ada.banner()).to_have_text(
                "Real-time server unreachable — reconnecting…", timeout=SHOWN
            )
            texts = [f"while you were away {n} {token}" for n in range(3)]
            for n, text in enumerate(texts):
                assert call(grace, "say", "general", text) == {"ok": True}
                rename(appliance, admin, party_id, f"Jacquard Looms v{n} {token}")
            # Ada types a line while cut off: it goes out once she is back
            # in the room, not refused as a stranger's.
            ada.say(f"typed offline {token}")
            time.sleep(5)
            proxy.restore()
            expect(ada.banner()).to_be_hidden(timeout=RECOVERED)
            for text in texts:
                expect(ada.lines(text)).to_have_count(1, timeout=SHOWN)
            expect(ada.lines(f"typed offline {token}")).to_have_count(1, timeout=SHOWN)
            expect(ada.page.locator("#say-error")).to_be_hidden()
            assert any(
                args[0].get("text") == f"typed offline {token}"
                for args in grace.received
            )
            expect(ada.party(party_id)).to_have_text(f"Jacquard Looms v2 {token}")
            # In the order they were said, each once.
            shown = ada.page.locator("#messages .line .text").all_inner_texts()
            assert [t for t in shown if t in texts] == texts
            # Still live afterwards.
            assert call(grace, "say", "general", f"and now {token}") == {"ok": True}
            expect(ada.lines(f"and now {token}")).to_have_count(1, timeout=SHOWN)
    finally:
        proxy.close()


def test_on_a_phone_the_page_fits_and_the_chat_input_is_in_view(open_page, users):
    # An iPhone 12's screen, in CSS pixels.
    ada = logged_in_page(
        open_page, users, "ada", viewport={"width": 390, "height": 844}
    )
    sizes = ada.page.evaluate(
        """() => {
          const box = (s) => document.querySelector(s).getBoundingClientRect();
          return {
            page: document.documentElement.scrollWidth,
            header: document.querySelector(".topbar").scrollWidth,
            logout: box("#logout").right, name: box("#me-name").width,
            chip: box("#connection").height, lineHeight: parseFloat(
              getComputedStyle(document.querySelector("#connection")).lineHeight),
            say: box("#say").bottom, send: box("#say-form button").right,
          };
        }"""
    )
    assert sizes["page"] <= 390 and sizes["header"] <= 390, sizes
    assert sizes["logout"] <= 390 and sizes["send"] <= 390, sizes
    assert sizes["name"] > 40, sizes  # the user's name, not squeezed away
    assert sizes["chip"] < 2 * sizes["lineHeight"], sizes  # one line
    assert sizes["say"] <= 844, sizes  # no scrolling to type a line
    screenshot(ada.page, "demo-phone")


def test_wrong_password_says_so(open_page, users):
    page = open_page()
    page.log_in(users["ada"][0], "not-the-password")
    expect(page.banner()).to_have_text("Wrong login or password", timeout=SHOWN)
    expect(page.page.locator("#login-view")).to_be_visible()
    expect(page.page.locator("#app-view")).to_be_hidden()
    screenshot(page.page, "demo-wrong-password")


def test_log_out_and_in_again(appliance, users, open_page):
    ada = logged_in_page(open_page, users, "ada")
    header = ada.page.evaluate("demo.session.header")
    ada.page.click("#logout")
    expect(ada.page.locator("#login-view")).to_be_visible()
    # Tryton ended the session: it no longer opens anything.
    deadline = time.monotonic() + SHOWN / 1000
    while time.monotonic() < deadline:
        try:
            appliance.rpc("model.res.user.get_preferences", [True, {}], header)
        except Exception:  # noqa: BLE001 - 401 or 403 from trytond
            break
        time.sleep(0.2)
    else:
        pytest.fail("the session still works after the logout")
    # A reload stays logged out (the tab forgot the session).
    ada.page.reload()
    expect(ada.page.locator("#login-view")).to_be_visible()


def test_expired_session_goes_back_to_the_login(appliance, users, open_page):
    ada = logged_in_page(open_page, users, "ada")
    header = ada.page.evaluate("demo.session.header")
    # The session ends in Tryton (as after a logout elsewhere, or its
    # max_age) while the page is connected: the server's next check of
    # sessions ([settings] session-check-interval, 10 s) ends the socket.
    appliance.rpc("common.db.logout", [], header)
    expect(ada.banner()).to_have_text(
        "Your session has expired — please log in again", timeout=EXPIRED
    )
    expect(ada.page.locator("#login-view")).to_be_visible()
    # And logging in again brings everything back.
    login, password, *_ = users["ada"]
    ada.log_in(login, password)
    ada.logged_in(login)
    expect(ada.banner()).to_be_hidden()


def test_realtime_server_down_says_so_and_recovers(appliance, users, token, open_page):
    ada = logged_in_page(open_page, users, "ada")
    stopped = appliance.run("supervisorctl", "stop", "oe_web_socketio:*", timeout=120)
    try:
        assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        expect(ada.banner()).to_have_text(
            "Real-time server unreachable — reconnecting…", timeout=SHOWN
        )
        expect(ada.page.locator("#connection")).not_to_have_attribute(
            "data-state", "connected"
        )
        screenshot(ada.page, "demo-server-down")
    finally:
        started = appliance.run(
            "supervisorctl", "start", "oe_web_socketio:*", timeout=120
        )
    assert "started" in started.stdout, started.stdout + started.stderr
    expect(ada.banner()).to_be_hidden(timeout=RECOVERED)
    expect(ada.page.locator("#connection")).to_have_attribute("data-state", "connected")
    ada.say(f"back again {token}")
    expect(ada.lines(f"back again {token}")).to_have_count(1, timeout=SHOWN)


# --- the namespace's answers to bad input (python-socketio)


def test_demo_namespace_refuses_bad_input_clearly(appliance, users):
    session = session_of(appliance, users, "grace")
    with sio_client(appliance, session) as client:
        assert call(client, "subscribe", "demo.room.Not A Room")["error"]["code"] == (
            "bad_request"
        )
        assert (
            call(client, "subscribe", "somewhere.else")["error"]["code"] == "forbidden"
        )
        assert (
            call(client, "say", "general", "not joined")["error"]["code"] == "forbidden"
        )
        assert call(client, "subscribe", "demo.room.general") in (True, False)
        assert call(client, "say", "general", "")["error"]["code"] == "bad_request"
        assert call(client, "say", "general", 42)["error"]["code"] == "bad_request"
        assert call(client, "say", "general", "x" * 501)["error"]["code"] == (
            "payload_too_large"
        )
        assert call(client, "say", "../etc", "hi")["error"]["code"] == "bad_request"
        # After all of that, the socket still works.
        assert call(client, "say", "general", "still here") == {"ok": True}
        who = call(client, "who")
        assert users["grace"][0] in [user["login"] for user in who]
        answer = call(client, "parties")
        assert isinstance(answer["parties"], list) and answer["total"] >= 0
    anonymous = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        anonymous.connect(
            appliance.url,
            namespaces=["/demo"],
            transports=["websocket"],
            wait_timeout=20,
        )


def test_a_user_who_may_not_read_parties_gets_none(appliance, admin, token):
    """The namespace applies ``ir.model.access`` of party.party as trytond
    does: here a group whose members may not read parties."""
    (group,) = appliance.rpc(
        "model.res.group.create", [[{"name": f"demo no parties {token}"}], {}], admin
    )
    (access,) = appliance.rpc(
        "model.ir.model.access.create",
        [
            [
                {
                    "model": "party.party",
                    "group": group,
                    "perm_read": False,
                    "perm_write": False,
                    "perm_create": False,
                    "perm_delete": False,
                }
            ],
            {},
        ],
        admin,
    )
    login, password = f"demo-noparty-{token}", f"pass-{secrets.token_hex(8)}"
    (uid,) = appliance.rpc(
        "model.res.user.create",
        [
            [
                {
                    "login": login,
                    "name": "No Parties",
                    "password": password,
                    "groups": [["add", [group]]],
                }
            ],
            {},
        ],
        admin,
    )
    try:
        session = appliance.login(login, password)
        # trytond itself refuses.
        with pytest.raises(RuntimeError, match="UserError"):  # AccessError
            appliance.rpc("model.party.party.search", [[], 0, None, None, {}], session)
        with sio_client(appliance, session) as client:
            assert call(client, "parties")["error"]["code"] == "forbidden"
            assert call(client, "subscribe", "demo.parties")["error"]["code"] == (
                "forbidden"
            )
            # The rest of the demo is theirs.
            assert call(client, "subscribe", "demo.room.general") in (True, False)
            assert call(client, "say", "general", "no parties for me") == {"ok": True}
    finally:
        appliance.rpc("model.ir.model.access.delete", [[access], {}], admin)
        appliance.rpc("model.res.user.write", [[uid], {"active": False}, {}], admin)
        appliance.rpc("model.res.group.write", [[group], {"active": False}, {}], admin)


def test_presence_counts_users_not_tabs():
    from oe_web_socketio_demo import online_users

    # The server's presence lists sockets; the demo shows each user once.
    present = [
        {"sid": "s1", "uid": 1, "login": "ada"},
        {"sid": "s2", "uid": 1, "login": "ada"},  # a second tab
        {"sid": "s3", "uid": 2, "login": "grace"},
    ]
    logins = {p["uid"]: p["login"] for p in present}
    users = online_users(logins, {1: "Ada"})
    assert users == [
        {"uid": 1, "login": "ada", "name": "Ada"},
        {"uid": 2, "login": "grace", "name": "grace"},  # no name: the login
    ]
