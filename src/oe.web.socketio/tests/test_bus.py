"""Tests of :mod:`oe_web_socketio.hosts.tryton.bus`: the message cache alone, then polls
as real HTTP requests to a real gevent server in this process, with a
small real authenticator (sessions in a dict) and :meth:`TrytonBus.notify`
called as the listener calls it. The integration with trytond and
PostgreSQL is in ``tests/test_tryton_bus.py``."""

from __future__ import annotations

import base64
import http.client
import json
import logging
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.socket
import pytest
from oe_web_socketio.auth import Credentials, Identity
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import (
    AuthenticationError,
    ConfigError,
    DatabaseUnavailable,
)
from oe_web_socketio.hosts.tryton.bus import (
    MessageCache,
    TrytonBus,
    own_channels,
)
from oe_web_socketio.hosts.tryton.host import TrytonHost
from oe_web_socketio.hosts.tryton.settings import TrytonSettings
from oe_web_socketio.routing import Router
from oe_web_socketio.server import Server

pytestmark = pytest.mark.timeout(30)

#: Seconds any one exchange with the test server may take.
TIMEOUT = 5.0

ADMIN = (1, "k" * 64)
OTHER = (2, "o" * 64)


def payload(channel: str, message_id: str, **content: Any) -> str:
    return json.dumps(
        {"channel": channel, "message": {**content, "message_id": message_id}},
        separators=(",", ":"),
    )


# --- the cache, alone


def cache_with(*messages: tuple[str, str], timeout: float = 300) -> MessageCache:
    cache = MessageCache(timeout, max_messages=1000)
    for now, (channel, message_id) in enumerate(messages):
        cache.append(channel, {"message_id": message_id}, message_id, float(now))
    return cache


def next_id(cache: MessageCache, channels, last, now: float = 10.0) -> str | None:
    message = cache.next(channels, last, now)
    return None if message is None else message.message_id


def test_without_last_message_the_first_cached_on_the_channels():
    cache = cache_with(("a", "1"), ("b", "2"), ("a", "3"))
    assert next_id(cache, {"b"}, None) == "2"
    assert next_id(cache, {"a", "b"}, None) == "1"
    assert next_id(cache, {"c"}, None) is None


def test_after_last_message_the_next_one_on_the_channels():
    cache = cache_with(("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"))
    assert next_id(cache, {"a"}, "1") == "3"
    assert next_id(cache, {"a", "b"}, "1") == "2"
    assert next_id(cache, {"a", "b"}, "2") == "3"


def test_after_the_last_message_nothing():
    cache = cache_with(("a", "1"), ("b", "2"))
    assert next_id(cache, {"a"}, "1") is None
    assert next_id(cache, {"a", "b"}, "2") is None


@pytest.mark.parametrize("last", ["unknown", "2", 7, ["1"], {"a": 1}])
def test_unknown_or_other_channels_last_message_gives_the_first(last):
    # "2" is on channel b, which the poll does not ask for: not found,
    # as in trytond.
    cache = cache_with(("a", "1"), ("b", "2"), ("a", "3"))
    assert next_id(cache, {"a"}, last) == "1"


def test_a_duplicate_id_counts_at_its_first_occurrence():
    cache = cache_with(("a", "1"), ("a", "2"), ("a", "1"))
    assert next_id(cache, {"a"}, "1") == "2"


def test_a_duplicate_id_counts_at_its_first_occurrence_on_the_channels():
    cache = cache_with(("b", "1"), ("a", "2"), ("a", "1"), ("a", "3"))
    assert next_id(cache, {"a"}, "1") == "3"
    assert next_id(cache, {"a", "b"}, "1") == "2"


def test_expired_messages_are_skipped_and_dropped():
    cache = cache_with(("a", "1"), ("a", "2"), ("a", "3"), timeout=10)
    # At 11.5 the message of time 0 and 1 are older than 10 s.
    assert next_id(cache, {"a"}, None, now=11.5) == "3"
    assert len(cache) == 1
    # The expired id is now unknown: the first cached one.
    assert next_id(cache, {"a"}, "1", now=11.5) == "3"
    assert next_id(cache, {"a"}, None, now=100) is None
    assert len(cache) == 0


def test_the_oldest_are_dropped_beyond_the_maximum():
    cache = MessageCache(300, max_messages=3)
    for number in range(5):
        cache.append("a", {"message_id": str(number)}, str(number), 0.0)
    assert len(cache) == 3
    assert cache.dropped == 2
    assert next_id(cache, {"a"}, None, now=1) == "2"


def test_many_messages_on_one_channel_compact_its_log():
    cache = MessageCache(300, max_messages=100)
    for number in range(1000):
        cache.append("a", {"message_id": str(number)}, str(number), 0.0)
    assert len(cache) == 100
    assert next_id(cache, {"a"}, None, now=1) == "900"
    assert next_id(cache, {"a"}, "950", now=1) == "951"
    assert next_id(cache, {"a"}, "999", now=1) is None


# --- allow_subscribe, from trytond's configuration (read with the rest of it)

#: The one option trytond.conf must have for the server to read it.
DATABASE_URI = "[database]\nuri = postgresql:///\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", False), ("[bus]\n", False), ("[bus]\nallow_subscribe = True\n", True)],
)
def test_allow_subscribe_reads_trytond_configuration(tmp_path, text, expected):
    path = tmp_path / "trytond.conf"
    path.write_text(DATABASE_URI + text)
    assert TrytonSettings.from_config_file(str(path)).allow_subscribe is expected


def test_allow_subscribe_refuses_a_non_boolean(tmp_path):
    path = tmp_path / "trytond.conf"
    path.write_text(DATABASE_URI + "[bus]\nallow_subscribe = maybe\n")
    with pytest.raises(ConfigError) as info:
        TrytonSettings.from_config_file(str(path))
    assert info.value.key == "[bus] allow_subscribe"
    assert "not a boolean" in str(info.value)


def test_no_trytond_configuration_no_bus():
    assert TrytonHost.from_config(Config()) is None


# --- polls over HTTP


class DictAuthenticator:
    """Sessions from a dict: ``(uid, key) -> login``."""

    def __init__(self, sessions: dict[tuple[int, str], str]) -> None:
        self.sessions = sessions
        self.seen: list[Credentials] = []

    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        self.seen.append(credentials)
        login = self.sessions.get((credentials.uid, credentials.key))
        if login is None:
            # As Tryton's: one line per refusal.
            logging.getLogger("oe_web_socketio.auth").warning(
                "Refused uid %s: invalid session", credentials.uid
            )
            raise AuthenticationError("invalid session")
        assert credentials.database is not None
        return Identity(db=credentials.database, uid=credentials.uid, login=login)


class GeventHTTPConnection(http.client.HTTPConnection):
    """http.client on a gevent socket: it waits without blocking the
    server, which runs in this thread."""

    def connect(self) -> None:
        self.sock = gevent.socket.create_connection((self.host, self.port), TIMEOUT)


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)


def logged(caplog) -> list[logging.LogRecord]:
    """The records of *caplog*, but the server's access log."""
    return [r for r in caplog.records if r.name != "oe_web_socketio.access"]


def session_header(uid: int, key: str, login: str = "admin") -> str:
    return "Session " + base64.b64encode(f"{login}:{uid}:{key}".encode()).decode()


class BusServer:
    def __init__(self, bus: TrytonBus) -> None:
        self.bus = bus
        self.server = Server(("127.0.0.1", 0), Router([bus.route()]))

    def request(
        self,
        body: Any = None,
        *,
        path: str = "/oe/bus",
        method: str = "POST",
        session: tuple[int, str] | None = ADMIN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        all_headers = {"Content-Type": "application/json"}
        if session is not None:
            all_headers["Authorization"] = session_header(*session)
        all_headers.update(headers or {})
        if raw is None:
            raw = b"" if body is None else json.dumps(body).encode()
        host, port = self.server.address[:2]
        connection = GeventHTTPConnection(host, port, timeout=TIMEOUT)
        try:
            with gevent.Timeout(TIMEOUT):
                connection.request(method, path, raw, all_headers)
                return Answer(connection.getresponse())
        finally:
            connection.close()

    def poll(self, channels, last_message=None, **options: Any) -> Answer:
        return self.request(
            {"channels": channels, "last_message": last_message}, **options
        )

    def spawn_polls(self, count: int, *args: Any, **options: Any):
        """Start *count* polls; return their greenlets once all are held."""
        before = self.bus.held_polls()
        polls = [gevent.spawn(self.poll, *args, **options) for _ in range(count)]
        with gevent.Timeout(TIMEOUT):
            while self.bus.held_polls() < before + count:
                gevent.sleep(0.01)
        return polls


def make_bus(**options: Any) -> TrytonBus:
    config_options = {"databases": ("oe", "other")}
    for key in ("bus_long_polling_timeout", "bus_cache_timeout"):
        if key in options:
            config_options[key] = options.pop(key)
    if "cors_allowed_origins" in options:
        config_options["cors_allowed_origins"] = options.pop("cors_allowed_origins")
    authenticator = DictAuthenticator({ADMIN: "admin", OTHER: "other"})
    return TrytonBus(Config(**config_options), authenticator, **options)


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(**options)``: a server of a new bus, stopped in teardown."""
    servers: list[BusServer] = []

    def start(**options: Any) -> BusServer:
        server = BusServer(make_bus(**options))
        server.server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.bus.close()
        server.server.stop(timeout=1)


@pytest.fixture
def server(serve) -> BusServer:
    return serve()


def test_a_cached_message_is_answered_at_once_as_trytond_does(server):
    server.bus.notify("oe", payload("client:x", "m1", type="notification", title="Hi"))
    answer = server.poll(["client:x"])
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body == (
        b'{"message":{"type":"notification","title":"Hi","message_id":"m1"},'
        b'"channel":"client:x"}'
    )


def test_a_held_poll_is_released_by_a_message_on_its_channel(server):
    [poll] = server.spawn_polls(1, ["client:x", "chat:1"])
    server.bus.notify("oe", payload("chat:1", "m1", text="hello"))
    answer = poll.get(timeout=TIMEOUT)
    assert answer.json() == {
        "message": {"text": "hello", "message_id": "m1"},
        "channel": "chat:1",
    }
    assert server.bus.held_polls() == 0


def test_a_message_on_another_channel_or_database_releases_nothing(server):
    [poll] = server.spawn_polls(1, ["client:x"])
    server.bus.notify("oe", payload("client:y", "m1"))
    server.bus.notify("other", payload("client:x", "m2"))
    gevent.sleep(0.05)
    assert not poll.ready()
    assert server.bus.held_polls() == 1
    server.bus.notify("oe", payload("client:x", "m3"))
    assert poll.get(timeout=TIMEOUT).json()["message"]["message_id"] == "m3"


def test_last_message_is_followed(server):
    for number in (1, 2, 3):
        server.bus.notify("oe", payload("client:x", f"m{number}"))
    ids = []
    last = None
    for _ in range(3):
        last = server.poll(["client:x"], last).json()["message"]["message_id"]
        ids.append(last)
    assert ids == ["m1", "m2", "m3"]
    # After the last one, the poll is held until the next message.
    [poll] = server.spawn_polls(1, ["client:x"], "m3")
    server.bus.notify("oe", payload("client:x", "m4"))
    assert poll.get(timeout=TIMEOUT).json()["message"]["message_id"] == "m4"
    # An unknown last message: the first cached one.
    assert server.poll(["client:x"], "gone").json()["message"]["message_id"] == "m1"


def test_user_channels_are_the_callers_own(server):
    server.bus.notify("oe", payload("user:2", "for-other"))
    server.bus.notify("oe", payload("user:1", "for-admin"))
    # Admin (uid 1) asks for user:2: it gets user:1's message instead.
    answer = server.poll(["user:2"])
    assert answer.json() == {
        "message": {"message_id": "for-admin"},
        "channel": "user:1",
    }
    # With no channels at all, a poll still gets its user's messages.
    assert server.request({}).json()["channel"] == "user:1"
    assert server.request({}, session=OTHER).json()["channel"] == "user:2"


def test_notification_channels_are_the_callers_own(server, caplog):
    """trytond 8.0 serves ``notification:<uid>`` (the user's
    ``res.notification``) to any user who asks; here a poll gets its own."""
    server.bus.notify("oe", payload("notification:2", "for-other", count=1))
    server.bus.notify("oe", payload("notification:1", "for-admin", count=3))
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.bus"):
        answer = server.poll(["notification:2", "client:x"])
    assert answer.json() == {
        "message": {"count": 3, "message_id": "for-admin"},
        "channel": "notification:1",
    }
    [record] = logged(caplog)
    assert record.getMessage() == (
        "Bus poll of 'admin' on 'oe' asked for channels of another user, "
        "given its own instead: notification:2"
    )
    # Its own, as sao asks: no log line; the other user gets theirs.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.bus"):
        mine = server.poll(["notification:2"], session=OTHER)
    assert mine.json()["channel"] == "notification:2"
    assert logged(caplog) == []


@pytest.mark.parametrize(
    ("asked", "listened"),
    [
        ([], {"user:7"}),
        (["client:a", "user:1"], {"client:a", "user:7"}),
        (["notification:1", "notification:x"], {"notification:7", "user:7"}),
        (["notification:", "user:"], {"notification:7", "user:7"}),
        (
            ["notifications:1", "chat:party.party,1"],
            {"notifications:1", "chat:party.party,1", "user:7"},
        ),
    ],
)
def test_own_channels(asked, listened):
    assert own_channels(asked, 7) == listened


def test_a_poll_times_out_with_the_empty_message(serve):
    server = serve(bus_long_polling_timeout=0.2)
    answer = server.poll(["client:x"])
    assert answer.status == 200
    assert answer.body == b'{"message":null,"channel":null}'


def test_one_message_releases_every_poll_of_its_channel(server):
    polls = server.spawn_polls(50, ["chat:all"])
    others = server.spawn_polls(5, ["chat:none"])
    server.bus.notify("oe", payload("chat:all", "m1"))
    answers = [poll.get(timeout=TIMEOUT) for poll in polls]
    assert {answer.json()["message"]["message_id"] for answer in answers} == {"m1"}
    assert server.bus.held_polls() == 5
    assert server.bus.stats()["oe"] == {"polls": 5, "messages": 1, "dropped": 0}
    server.bus.close()
    assert [poll.get(timeout=TIMEOUT).json() for poll in others] == [
        {"message": None, "channel": None}
    ] * 5


def test_close_answers_held_polls_empty_and_later_ones_503(server):
    polls = server.spawn_polls(3, ["client:x"])
    server.bus.close()
    for poll in polls:
        assert poll.get(timeout=TIMEOUT).json() == {"message": None, "channel": None}
    assert server.bus.held_polls() == 0
    later = server.poll(["client:x"])
    assert later.status == 503
    assert later.headers["Retry-After"] == "5"


class DownAuthenticator:
    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        raise DatabaseUnavailable(credentials.database or "oe", "test: down")


def test_a_session_that_cannot_be_checked_is_503_with_one_log_line(server, caplog):
    server.bus.authenticator = DownAuthenticator()
    with caplog.at_level(logging.INFO):
        answer = server.poll(["client:x"])
    assert (answer.status, answer.json()) == (503, {"error": "try again later"})
    assert answer.headers["Retry-After"] == "5"
    [record] = logged(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "Cannot authenticate a bus poll from 127.0.0.1: "
        "database 'oe' unavailable: test: down"
    )


def test_the_session_cookie_is_accepted(server):
    server.bus.notify("oe", payload("user:1", "m1"))
    answer = server.request(
        {"channels": []},
        session=None,
        headers={"Cookie": f"tryton_session=admin:1:{'k' * 64}"},
    )
    assert answer.json()["message"] == {"message_id": "m1"}


def test_each_database_has_its_bus_and_authenticates_its_polls(server):
    server.bus.notify("other", payload("client:x", "in-other"))
    server.bus.notify("oe", payload("client:x", "in-oe"))
    answer = server.poll(["client:x"], path="/other/bus", session=OTHER)
    assert answer.json()["message"] == {"message_id": "in-other"}
    assert server.bus.authenticator.seen[-1].database == "other"


@pytest.mark.parametrize(
    ("session", "headers", "www_authenticate"),
    [
        (None, {}, True),
        ((1, "wrong"), {}, True),
        (None, {"Authorization": "Session not-base64!"}, True),
        (None, {"X-Requested-With": "XMLHttpRequest"}, False),
    ],
)
def test_refused_session_is_401_empty_as_trytond(
    server, caplog, session, headers, www_authenticate
):
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.bus"):
        answer = server.request({"channels": []}, session=session, headers=headers)
    assert answer.status == 401
    assert answer.body == b""
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert (
        answer.headers.get("WWW-Authenticate") == 'Basic realm="Tryton"'
    ) is www_authenticate
    # One line: the bus's, or the authenticator's for a session it refused.
    [record] = logged(caplog)
    if session == (1, "wrong"):
        assert record.getMessage() == "Refused uid 1: invalid session"
    else:
        assert record.getMessage().startswith(
            "Refused bus poll on 'oe' from 127.0.0.1: "
        )


def test_no_authenticator_refuses_every_poll(serve):
    server = serve()
    server.bus.authenticator = None
    assert server.poll(["client:x"]).status == 401


def test_disabled_bus_is_501_once_authenticated(serve):
    server = serve(allow_subscribe=False)
    assert server.poll(["client:x"]).status == 501
    assert server.poll(["client:x"], session=None).status == 401


def test_unserved_database_is_404_and_get_405(server):
    answer = server.poll(["client:x"], path="/nope/bus")
    assert (answer.status, answer.json()) == (404, {"error": "not found"})
    assert server.request(method="GET").status == 405


@pytest.mark.parametrize(
    ("raw", "headers", "status", "error"),
    [
        (b"{not json", {}, 400, "unable to read JSON request"),
        (b"[1, 2]", {}, 400, "the body must be a JSON object"),
        (b'{"channels": "client:x"}', {}, 400, "channels must be a list of strings"),
        (b'{"channels": null}', {}, 400, "channels must be a list of strings"),
        (b'{"channels": [1]}', {}, 400, "channels must be a list of strings"),
        (
            json.dumps({"channels": [f"c:{n}" for n in range(10_000)]}).encode(),
            {},
            400,
            "too many channels: 10000 (at most 256)",
        ),
        (
            json.dumps({"channels": ["client:x", "c" * 201]}).encode(),
            {},
            400,
            "channel too long: 201 characters (at most 200)",
        ),
        (
            json.dumps({"channels": ["c" * 1_048_576]}).encode(),
            {},
            413,
            "body too large",
        ),
        (
            json.dumps({"channels": [f"c:{n}" for n in range(257)]}).encode(),
            {},
            400,
            "too many channels: 257 (at most 256)",
        ),
        (b"{}", {"Content-Type": "text/plain"}, 400, "not a JSON request"),
        (b"{}", {"Content-Encoding": "gzip"}, 415, "unsupported Content-Encoding"),
    ],
)
def test_bad_body_is_refused_with_one_log_line(
    server, caplog, raw, headers, status, error
):
    with caplog.at_level(logging.INFO):
        answer = server.request(raw=raw, headers=headers)
    assert (answer.status, answer.json()) == (status, {"error": error})
    [record] = logged(caplog)
    assert record.getMessage() == (
        f"Refused POST /oe/bus from 127.0.0.1: {status} {error}"
    )


def test_bad_bodies_harm_no_other_poll(server):
    [poll] = server.spawn_polls(1, ["client:x"])
    for raw in (b"{", b"[]", b'{"channels": {"a": 1}}'):
        assert server.request(raw=raw).status == 400
    server.bus.notify("oe", payload("client:x", "m1"))
    assert poll.get(timeout=TIMEOUT).json()["message"] == {"message_id": "m1"}


@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        ("http://{host}", (), 200),
        ("http://elsewhere.example", (), 403),
        ("http://elsewhere.example", ("http://elsewhere.example",), 200),
        ("http://elsewhere.example", ("*",), 200),
        ("null", ("*",), 403),
        # Not URLs (urlsplit raises on the first): refused, not a 500.
        ("http://[::1", (), 403),
        # (A NUL or another control character never gets here: the HTTP
        # parser refuses it, test_http_abuse.py.)
        ("\xff\xfe", (), 403),
    ],
)
def test_origin_is_checked_as_trytond_does(serve, origin, allowed, status):
    server = serve(cors_allowed_origins=allowed)
    server.bus.notify("oe", payload("client:x", "m1"))
    host = "{}:{}".format(*server.server.address[:2])
    origin = origin.format(host=host)
    answer = server.poll(["client:x"], headers={"Origin": origin})
    assert answer.status == status
    if status == 200:
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert answer.headers["Vary"] == "Origin"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"message": {"message_id": "m"}}', "no channel string"),
        ('{"channel": "c", "message": "hi"}', "no message object"),
        ('{"channel": "c", "message": {"id": 1}}', "no message_id string"),
    ],
)
def test_bad_notification_is_logged_once_and_skipped(server, caplog, text, problem):
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.bus"):
        server.bus.notify("oe", text)
    [record] = logged(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"Skipped a bus message on 'oe': {problem}: {text!r}"
    )
    assert server.bus.cached_messages() == 0


def test_notification_of_unserved_database_is_skipped(server, caplog):
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.bus"):
        server.bus.notify("nope", payload("c", "m"))
    assert len(logged(caplog)) == 1
    assert server.bus.cached_messages() == 0


def test_cache_timeout_is_honoured():
    now = [0.0]
    bus = make_bus(bus_cache_timeout=10, clock=lambda: now[0])
    bus.notify("oe", payload("c", "m1"))
    now[0] = 5.0
    bus.notify("oe", payload("c", "m2"))
    assert bus.stats()["oe"]["messages"] == 2
    now[0] = 12.0
    assert bus.cached_messages() == 1
    assert bus.stats() == {
        "oe": {"polls": 0, "messages": 1, "dropped": 0},
        "other": {"polls": 0, "messages": 0, "dropped": 0},
    }
