"""The Tryton bus served by oe_web_socketio, against trytond's own.

ERP code publishes as trytond modules do (``trytond.bus.notify`` and
``Bus.publish`` in a trytond transaction, in a fresh interpreter); polls
are HTTP requests shaped as the web client (sao 8.0, ``bus.js``) sends
them, to a real ``bin/oe_web_socketio`` serving the test database and, for
comparison, to the ``trytond`` fixture's own bus (the appliance's
trytond.conf has ``[bus] allow_subscribe = True``): both answer the same
bytes. The last test goes through the appliance's nginx to the appliance's
oe_web_socketio.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from .realtime import RealtimeServer
from .tryton import new_password, run_python

pytestmark = pytest.mark.timeout(300)

#: Seconds tests wait for what should come at once.
DEADLINE = 15.0
#: Seconds a poll may stay open in a test (the servers hold it 300 s).
POLL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def realtime(appliance, trytond, tmp_path_factory):
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        tmp_path_factory.mktemp("bus") / "oe_web_socketio.log",
    )
    try:
        health = server.health()
        assert "bus" in health, f"no bus in /health: {health}"
        _wait_listening(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


@pytest.fixture(scope="module")
def users(trytond):
    """Sessions of three users, logged in from 127.0.0.1. Only
    :func:`test_user_channels_are_the_callers_own` notifies users: a
    test that needs its polls held uses Eve, whose user channel stays
    empty."""
    sessions = []
    for name in ("ana", "ben", "eve"):
        password = new_password()
        trytond.create_user(f"bus_{name}", password)
        sessions.append(trytond.login(f"bus_{name}", password))
    return sessions


@pytest.fixture(scope="module")
def trytond_bus(trytond, users, pool):
    """trytond's own bus, listening: its listener starts with the first
    poll and caches only what comes after."""
    warm = f"client:{uuid.uuid4()}"
    held = pool.submit(poll, trytond.url, trytond.database, users[0], [warm])
    deadline = time.monotonic() + DEADLINE
    while not held.done():
        assert time.monotonic() < deadline, "trytond's bus never answered"
        erp(trytond, f"Bus.publish({warm!r}, {{'warm': True}})")
        try:
            held.result(timeout=0.5)
        except TimeoutError:
            continue
    assert held.result()[0] == 200
    return trytond.url


@pytest.fixture
def channel():
    """A client channel of this test alone, as sao names its own."""
    return f"client:{uuid.uuid4()}"


def _wait_listening(server: RealtimeServer) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        listeners = server.health().get("listeners", {})
        if listeners and all(s["state"] == "listening" for s in listeners.values()):
            return
        assert time.monotonic() < deadline, f"not listening: {listeners}"
        time.sleep(0.05)


def poll(
    url: str,
    database: str,
    session: Any,
    channels: list[str] | None = None,
    last_message: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """``POST /<database>/bus`` as sao's ``Sao.Bus.listen`` sends it (jQuery
    drops an undefined ``last_message``); return the status, headers and
    body."""
    if raw is None:
        body: dict[str, Any] = {}
        if last_message is not None:
            body["last_message"] = last_message
        body["channels"] = channels or []
        raw = json.dumps(body, separators=(",", ":")).encode()
    request = urllib.request.Request(
        f"{url}/{database}/bus",
        data=raw,
        method=method,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/javascript, */*; q=0.01",
            "X-Requested-With": "XMLHttpRequest",
            **(headers or {}),
        },
    )
    if session is not None:
        header = session if isinstance(session, str) else session.header
        request.add_header("Authorization", f"Session {header}")
    try:
        with urllib.request.urlopen(request, timeout=POLL_TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def erp(trytond, code: str, database: str | None = None) -> None:
    """Run *code* in a trytond transaction of *database* (the test
    database), committed at the end, with ``bus``, ``Bus`` and
    ``transaction`` at hand."""
    script = textwrap.dedent(
        f"""
        import warnings
        # trytond 8.0.12 trips over its own deprecation.
        warnings.filterwarnings("ignore", "trytond.config.config is deprecated")
        import trytond.config as config
        config.update_etc({str(trytond.tryton_db.trytond_conf)!r})
        from trytond.transaction import Transaction
        import trytond.bus as bus
        from trytond.bus import Bus
        with Transaction().start({database or trytond.database!r}, 0) as transaction:
        """
    ) + textwrap.indent(textwrap.dedent(code), "    ")
    result = run_python(script, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def wait_held(server: RealtimeServer, database: str, count: int) -> None:
    """Wait until *server* holds *count* polls of *database*."""
    deadline = time.monotonic() + DEADLINE
    while (held := server.health()["bus"][database]["polls"]) < count:
        assert time.monotonic() < deadline, f"{held} of {count} polls held"
        time.sleep(0.02)


def held_polls(server: RealtimeServer, database: str) -> int:
    return server.health()["bus"][database]["polls"]


def answer(future: Future) -> Any:
    status, headers, body = future.result(timeout=DEADLINE)
    assert status == 200, (status, body)
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


# -- the cache against trytond's ---------------------------------------------


def test_the_cache_answers_as_trytonds_message_queue():
    """Random messages and polls: ``MessageCache.next`` and trytond's
    ``_MessageQueue.get_next`` give the same message every time (no
    expiry here: trytond's clock is the wall clock)."""
    script = textwrap.dedent(
        """
        import random, warnings
        warnings.filterwarnings("ignore", "trytond.config.config is deprecated")
        from trytond.bus import _MessageQueue
        from oe_web_socketio.hosts.tryton.bus import MessageCache

        rng = random.Random(4)
        channels = ["a", "b", "c", "user:1"]
        for run in range(50):
            theirs = _MessageQueue(3600)
            ours = MessageCache(3600, max_messages=10_000)
            ids = []
            for step in range(60):
                if rng.random() < 0.5:
                    channel = rng.choice(channels)
                    # Now and then an id seen before: trytond stops at
                    # its first occurrence.
                    if ids and rng.random() < 0.1:
                        message_id = rng.choice(ids)
                    else:
                        message_id = f"m{run}-{step}"
                    ids.append(message_id)
                    content = {"message_id": message_id}
                    theirs.append(channel, content)
                    ours.append(channel, content, message_id, 0.0)
                    continue
                wanted = set(rng.sample(channels, rng.randint(1, 3)))
                last = rng.choice([None, "unknown", *ids[-5:]])
                expected = theirs.get_next(wanted, last)
                got = ours.next(wanted, last, 0.0)
                got = (None, None) if got is None else (got.channel, got.content)
                assert got == expected, (run, step, wanted, last, got, expected)
        print("same")
        """
    )
    result = run_python(script, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "same"


# -- delivery ----------------------------------------------------------------


def test_a_sao_poll_gets_what_erp_code_notified_as_trytond_does(
    realtime, trytond, trytond_bus, users, pool, channel
):
    eve = users[2]
    ours = pool.submit(poll, realtime.url, trytond.database, eve, [channel])
    theirs = pool.submit(poll, trytond_bus, trytond.database, eve, [channel])
    wait_held(realtime, trytond.database, 1)
    client = channel.partition(":")[2]
    erp(trytond, f"bus.notify('Invoice posted', 'INV-1', client={client!r})")
    status, headers, body = ours.result(timeout=DEADLINE)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    message_id = json.loads(body)["message"]["message_id"]
    assert (
        body
        == json.dumps(
            {
                "message": {
                    "type": "notification",
                    "title": "Invoice posted",
                    "body": "INV-1",
                    "priority": 1,
                    "message_id": message_id,
                },
                "channel": channel,
            },
            separators=(",", ":"),
        ).encode()
    )
    their_status, their_headers, their_body = theirs.result(timeout=DEADLINE)
    assert (their_status, their_headers["Content-Type"], their_body) == (
        status,
        headers["Content-Type"],
        body,
    )


def test_user_channels_are_the_callers_own(realtime, trytond, trytond_bus, users, pool):
    ana, ben, _ = users
    # Ana asks for Ben's channel; both are notified, Ben first.
    erp(
        trytond,
        f"""
        bus.notify('for ben', user={ben.uid})
        bus.notify('for ana', user={ana.uid})
        """,
    )
    for url in (realtime.url, trytond_bus):
        got = answer(pool.submit(poll, url, trytond.database, ana, [f"user:{ben.uid}"]))
        assert got["channel"] == f"user:{ana.uid}"
        assert got["message"]["title"] == "for ana"
    # With no channel at all, a poll still gets its user's messages.
    got = answer(pool.submit(poll, realtime.url, trytond.database, ben, []))
    assert (got["channel"], got["message"]["title"]) == (f"user:{ben.uid}", "for ben")


def test_notifications_are_the_callers_own(
    appliance, realtime, trytond, trytond_bus, users, pool
):
    """A ``res.notification`` for Ana is published on ``notification:<ana>``;
    Eve (whose ``user:`` channel stays empty) asks for that channel:
    trytond gives her Ana's notification, we give her her own."""
    ana, _, eve = users
    script = textwrap.dedent(
        f"""
        import warnings
        warnings.filterwarnings("ignore", "trytond.config.config is deprecated")
        import trytond.config as config
        config.update_etc({str(trytond.tryton_db.trytond_conf)!r})
        from trytond.pool import Pool
        from trytond.transaction import Transaction
        db = {trytond.database!r}
        with Transaction().start(db, 0):
            Pool(db).init()
        with Transaction().start(db, 0):
            Notification = Pool().get("res.notification")
            Notification.create([{{"user": {ana.uid}, "label": "for ana"}}])
            Notification.create([{{"user": {eve.uid}, "label": "for eve"}}])
        """
    )
    # The appliance's interpreter: the Tryton modules of its eggs.
    result = appliance.run("python", "-c", script, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    asked = [f"notification:{ana.uid}"]
    theirs = answer(pool.submit(poll, trytond_bus, trytond.database, eve, asked))
    assert theirs["channel"] == f"notification:{ana.uid}"  # trytond 8.0 leaks
    ours = answer(pool.submit(poll, realtime.url, trytond.database, eve, asked))
    assert ours["channel"] == f"notification:{eve.uid}"
    assert ours["message"]["content"] == ["for eve"]
    # Ana's own polls get hers (after her user channel's): it was there to
    # be leaked.
    got = answer(pool.submit(poll, realtime.url, trytond.database, ana, asked))
    if got["channel"] == f"user:{ana.uid}":
        last = got["message"]["message_id"]
        got = answer(
            pool.submit(poll, realtime.url, trytond.database, ana, asked, last)
        )
    assert (got["channel"], got["message"]["content"]) == (asked[0], ["for ana"])


def test_last_message_is_followed_as_trytond_does(
    realtime, trytond, trytond_bus, users, pool, channel
):
    eve = users[2]
    # One transaction each: trytond reverses the notifications it reads
    # at once (it pops them from the end of the batch).
    for n in (1, 2, 3):
        erp(trytond, f"Bus.publish({channel!r}, {{'n': {n}}})")

    def both(last_message):
        answers = [
            answer(pool.submit(poll, url, trytond.database, eve, [channel], last))
            for url, last in [(realtime.url, last_message), (trytond_bus, last_message)]
        ]
        assert answers[0] == answers[1]
        return answers[0]["message"]

    first = both(None)
    second = both(first["message_id"])
    third = both(second["message_id"])
    assert [first["n"], second["n"], third["n"]] == [1, 2, 3]
    assert both("an id never seen") == first
    # After the last one, the poll is held until the next message.
    held = pool.submit(
        poll, realtime.url, trytond.database, eve, [channel], third["message_id"]
    )
    wait_held(realtime, trytond.database, 1)
    erp(trytond, f"Bus.publish({channel!r}, {{'n': 4}})")
    assert answer(held)["message"]["n"] == 4


def test_messages_of_one_transaction_come_in_their_order(
    realtime, trytond, users, pool, channel
):
    eve = users[2]
    erp(
        trytond,
        "".join(f"Bus.publish({channel!r}, {{'n': {n}}})\n" for n in (1, 2, 3)),
    )
    seen: list[int] = []
    last = None
    for _ in range(3):
        got = answer(
            pool.submit(poll, realtime.url, trytond.database, eve, [channel], last)
        )
        seen.append(got["message"]["n"])
        last = got["message"]["message_id"]
    assert seen == [1, 2, 3]


def test_rollback_delivers_nothing(realtime, trytond, users, pool, channel):
    eve = users[2]
    held = pool.submit(poll, realtime.url, trytond.database, eve, [channel])
    wait_held(realtime, trytond.database, 1)
    erp(
        trytond,
        f"""
        Bus.publish({channel!r}, {{'n': 'rolled back'}})
        transaction.rollback()
        """,
    )
    erp(trytond, f"Bus.publish({channel!r}, {{'n': 'committed'}})")
    # The poll was held across the rollback: the committed message is the
    # first it got, and the first the cache has.
    assert answer(held)["message"]["n"] == "committed"
    again = pool.submit(poll, realtime.url, trytond.database, eve, [channel])
    assert answer(again)["message"]["n"] == "committed"


def test_a_message_comes_at_its_commit(
    appliance, realtime, trytond, users, pool, channel
):
    """A transaction that published first but commits last is delivered
    last: the poll is released by the other one's commit."""
    eve = users[2]
    held = pool.submit(poll, realtime.url, trytond.database, eve, [channel])
    wait_held(realtime, trytond.database, 1)
    script = textwrap.dedent(
        f"""
        import sys, warnings
        warnings.filterwarnings("ignore", "trytond.config.config is deprecated")
        import trytond.config as config
        config.update_etc({str(trytond.tryton_db.trytond_conf)!r})
        from trytond.transaction import Transaction
        from trytond.bus import Bus
        with Transaction().start({trytond.database!r}, 0):
            Bus.publish({channel!r}, {{'n': 'published first'}})
            print("published", flush=True)
            sys.stdin.readline()
        print("committed", flush=True)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-W", "error", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as slow:
        try:
            assert slow.stdout.readline() == "published\n"
            erp(trytond, f"Bus.publish({channel!r}, {{'n': 'committed first'}})")
            first = answer(held)["message"]
            assert first["n"] == "committed first"
            slow.stdin.write("\n")
            slow.stdin.flush()
            assert slow.stdout.readline() == "committed\n"
        finally:
            if slow.poll() is None and not slow.stdin.closed:
                slow.stdin.close()
            try:
                slow.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                slow.kill()
                slow.wait(DEADLINE)
    after = pool.submit(
        poll, realtime.url, trytond.database, eve, [channel], first["message_id"]
    )
    assert answer(after)["message"]["n"] == "published first"


# -- refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "headers"),
    [
        (None, {}),
        (None, {"X-Requested-With": "none"}),
        ("YWRtaW46MTpub3QtYS1rZXk=", {}),  # admin:1:not-a-key
    ],
)
def test_refused_sessions_are_401_as_trytond(
    realtime, trytond, trytond_bus, session, headers
):
    before = realtime.log.read_text(errors="replace")
    answers = [
        poll(url, trytond.database, session, ["client:x"], headers=headers)
        for url in (realtime.url, trytond_bus)
    ]
    # One log line each (the authenticator's when it refused the session).
    logged = realtime.log.read_text(errors="replace")[len(before) :].splitlines()
    assert len([line for line in logged if "oe_web_socketio.access" not in line]) == 1
    for status, _headers, body in answers:
        assert (status, body) == (401, b"")
    ours, theirs = (a[1] for a in answers)
    assert ours.get("WWW-Authenticate") == theirs.get("WWW-Authenticate")
    assert ("WWW-Authenticate" in ours) is (headers != {})


def test_a_logged_out_session_is_refused(realtime, trytond, pool, channel):
    password = new_password()
    trytond.create_user("bus_cyd", password)
    cyd = trytond.login("bus_cyd", password)
    erp(trytond, f"Bus.publish({channel!r}, {{'n': 1}})")
    assert answer(pool.submit(poll, realtime.url, trytond.database, cyd, [channel]))
    trytond.logout(cyd)
    status, _, _ = poll(realtime.url, trytond.database, cyd, [channel])
    assert status == 401


def test_the_session_cookie_is_accepted(realtime, trytond, users, channel):
    eve = users[2]
    erp(trytond, f"Bus.publish({channel!r}, {{'n': 'cookie'}})")
    cookie = base64.b64decode(eve.header).decode()
    status, _, body = poll(
        realtime.url,
        trytond.database,
        None,
        [channel],
        headers={"Cookie": f"tryton_session={cookie}"},
    )
    assert status == 200
    assert json.loads(body)["message"]["n"] == "cookie"


@pytest.mark.parametrize(
    ("raw", "ours", "trytonds"),
    [
        (b"{not json", 400, 400),
        # trytond fails on these (500); we say the request is bad.
        (b"[1]", 400, 500),
        (b'{"channels": [1]}', 400, 500),
    ],
)
def test_bad_bodies(realtime, trytond, trytond_bus, users, raw, ours, trytonds):
    ana = users[0]
    assert poll(realtime.url, trytond.database, ana, raw=raw)[0] == ours
    assert poll(trytond_bus, trytond.database, ana, raw=raw)[0] == trytonds


def test_unserved_database_and_other_methods(realtime, trytond, users):
    ana = users[0]
    assert poll(realtime.url, "not_served", ana, ["client:x"])[0] == 404
    assert poll(realtime.url, trytond.database, ana, method="PUT")[0] == 405


# -- through the appliance ---------------------------------------------------


def test_the_appliance_serves_the_bus_through_nginx(appliance, trytond):
    """``POST /oe/bus`` on nginx is held by the appliance's oe_web_socketio
    (its /health counts it), and released by ERP code's notification."""
    session = appliance.login()
    database = appliance.database

    def appliance_polls() -> int:
        """The polls held by every real-time worker of the appliance:
        nginx sends the poll to one of them."""
        return sum(
            appliance.worker_health(name)["bus"][database]["polls"]
            for name in appliance.workers
        )

    channel = f"client:{uuid.uuid4()}"
    before = appliance_polls()
    with ThreadPoolExecutor(max_workers=1) as executor:
        held = executor.submit(poll, appliance.url, database, session, [channel])
        deadline = time.monotonic() + DEADLINE
        while appliance_polls() < before + 1:
            assert time.monotonic() < deadline, "the appliance holds no poll"
            time.sleep(0.05)
        erp(
            trytond,
            f"bus.notify('through nginx', client={channel.partition(':')[2]!r})",
            database=database,
        )
        got = answer(held)
    assert got["channel"] == channel
    assert got["message"]["title"] == "through nginx"
