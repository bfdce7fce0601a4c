"""Tests of :mod:`oe_web_socketio.hosts`: the plain WSGI host's handling of
what an application's authenticate callable does, the Tryton host's
construction from the configuration and what it contributes (no database
needed), and sessions checked without a database (a server without host,
Tryton's plain HTTP requests)."""

from __future__ import annotations

import base64
import logging

import pytest
from oe_web_socketio.auth import Identity
from oe_web_socketio.exceptions import AuthenticationError
from oe_web_socketio.hosts import HOST_FAILURE, Host, HostError
from oe_web_socketio.hosts.wsgi import WSGIHost, identity_of

pytestmark = pytest.mark.timeout(10)

LOGGER = "oe_web_socketio.hosts.wsgi"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", Identity(db=None, uid=None, login="alice")),
        ({"login": "bob", "uid": 2}, Identity(db=None, uid=2, login="bob")),
        ({"login": "carol", "uid": "c-3"}, Identity(db=None, uid="c-3", login="carol")),
        (Identity(db="x", uid=1, login="i"), Identity(db="x", uid=1, login="i")),
    ],
)
def test_identity_of_a_user(user, expected):
    assert identity_of(user) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        42,
        True,
        "",
        "x" * 257,
        {},
        {"login": 3},
        {"login": "a", "uid": True},
        {"login": "a", "uid": 1.5},
        ["alice"],
        object(),
    ],
)
def test_identity_of_what_is_no_user(garbage):
    assert identity_of(garbage) is None


def test_the_callable_gets_the_environ_and_the_payload():
    seen = []
    host = WSGIHost(lambda environ, auth: seen.append((environ, auth)) or "alice")
    identity = host.authenticate({"PATH_INFO": "/x"}, {"token": "t"}, "10.0.0.1")
    assert identity == Identity(db=None, uid=None, login="alice")
    assert seen == [({"PATH_INFO": "/x"}, {"token": "t"})]


def test_no_credentials_is_none_and_no_callable_is_anonymous():
    assert WSGIHost(lambda environ, auth: None).authenticate({}, None, None) is None
    assert WSGIHost().authenticate({}, {"session": "x"}, None) is None


def test_a_refusal_keeps_its_reason(caplog):
    def refuse(environ, auth):
        raise AuthenticationError("token expired")

    with pytest.raises(AuthenticationError, match="^token expired$"):
        WSGIHost(refuse).authenticate({}, None, "10.0.0.1")
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_a_raising_callable_is_logged_once_with_its_traceback(caplog):
    def broken(environ, auth):
        raise KeyError("users")

    with caplog.at_level(logging.ERROR, LOGGER), pytest.raises(HostError) as raised:
        WSGIHost(broken).authenticate({}, None, "10.0.0.1")
    assert str(raised.value) == HOST_FAILURE
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert "broken raised for 10.0.0.1" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_garbage_is_refused_with_one_line(caplog):
    with caplog.at_level(logging.ERROR, LOGGER), pytest.raises(HostError):
        WSGIHost(lambda environ, auth: 42).authenticate({}, None, "10.0.0.1")
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert "returned 42 for 10.0.0.1: not a user" in record.getMessage()
    assert record.exc_info is None


def test_authenticate_must_be_callable():
    with pytest.raises(TypeError, match="must be callable"):
        WSGIHost("alice")  # type: ignore[arg-type]


def test_a_host_without_database():
    host = WSGIHost()
    assert isinstance(host, Host)
    assert (host.pools, host.authenticator, host.orm()) == (None, None, None)
    with pytest.raises(LookupError, match="has no database 'oe'"):
        host.conninfo("oe")
    host.close()  # nothing to close


def test_the_tryton_host_reads_trytond_configuration(tmp_path):
    from oe_web_socketio.config import Config
    from oe_web_socketio.hosts.tryton import TrytonAuthenticator, TrytonHost

    assert TrytonHost.from_config(Config()) is None
    conf = tmp_path / "trytond.conf"
    conf.write_text("[database]\nuri = postgresql://u@/?host=/nowhere\n")
    host = TrytonHost.from_config(Config(trytond_config=str(conf), databases=("a",)))
    try:
        assert isinstance(host.authenticator, TrytonAuthenticator)
        assert host.conninfo("a") == "postgresql://u@/a?host=/nowhere"
        # No credentials: no query, no database needed.
        assert host.authenticate({}, None, None) is None
    finally:
        host.close()


def test_the_tryton_host_contributes_its_bus(tmp_path):
    from oe_web_socketio.config import Config
    from oe_web_socketio.hosts.tryton import BUS_CHANNEL, TrytonHost

    conf = tmp_path / "trytond.conf"
    conf.write_text(
        "[database]\nuri = postgresql://u@/?host=/nowhere\n"
        "[bus]\nallow_subscribe = True\n"
    )
    host = TrytonHost.from_config(Config(trytond_config=str(conf), databases=("a",)))
    assert host is not None
    try:
        assert host.settings.allow_subscribe is True
        assert [route.path for route in host.routes()] == ["/<database>/bus"]
        assert host.consumers() == {BUS_CHANNEL: host.bus.notify}
        assert host.counters()["bus"]() == {
            "a": {"polls": 0, "messages": 0, "dropped": 0}
        }
    finally:
        host.close()


def test_a_plain_host_contributes_nothing():
    host = WSGIHost()
    assert (tuple(host.routes()), host.consumers(), host.counters()) == ((), {}, {})
    assert host.named_database({"HTTP_X_TRYTON_DATABASE": "oe"}) is None
    assert host.request_context({}, "127.0.0.1") is None


def test_trytond_settings_are_read_once_with_the_bus(tmp_path):
    from oe_web_socketio.exceptions import ConfigError
    from oe_web_socketio.hosts.tryton import TrytonSettings

    conf = tmp_path / "trytond.conf"
    conf.write_text("[database]\nuri = postgresql:///\n")
    assert TrytonSettings.from_config_file(str(conf)).allow_subscribe is False
    conf.write_text("[database]\nuri = postgresql:///\n[bus]\nallow_subscribe = 2\n")
    with pytest.raises(ConfigError) as info:
        TrytonSettings.from_config_file(str(conf))
    assert (info.value.key, info.value.source) == ("[bus] allow_subscribe", str(conf))


# -- sessions without a database: a server without host, Tryton's requests --

SESSION = "Session " + base64.b64encode(b"ann:7:" + b"k" * 64).decode()


class _Sessions:
    """Accepts every session, as user 7 of the database named, or ``oe``."""

    def authenticate(self, credentials, address):
        return Identity(credentials.database or "oe", credentials.uid, "ann")


def test_a_session_host_without_authenticator_refuses_sessions_only(caplog):
    from oe_web_socketio.hosts import NO_AUTHENTICATOR, SessionHost

    host = SessionHost()
    assert host.authenticate({}, None, None) is None
    with pytest.raises(AuthenticationError, match=NO_AUTHENTICATOR):
        host.authenticate({"HTTP_AUTHORIZATION": SESSION}, None, None)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "REMOTE_ADDR": "::1"}
    assert host.authenticate_request(environ, "::1") is None
    caplog.clear()
    for header in (SESSION, "Session %%%"):
        with pytest.raises(AuthenticationError):
            host.authenticate_request({**environ, "HTTP_AUTHORIZATION": header}, None)
    assert [r.getMessage() for r in caplog.records] == [
        f"Refused GET /x from ::1: {NO_AUTHENTICATOR}",
        "Refused GET /x from ::1: malformed session",
    ]


def test_tryton_requests_name_their_database_and_tell_trytond_of_themselves():
    from oe_web_socketio.hosts.tryton import TrytonSessions

    host = TrytonSessions(_Sessions())
    environ = {
        "HTTP_AUTHORIZATION": SESSION,
        "HTTP_X_TRYTON_DATABASE": "other",
        "HTTP_HOST": "erp.example",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    assert host.authenticate_request(environ, "10.0.0.1") == Identity("other", 7, "ann")
    # Socket.IO names the database in its auth payload, not in a header.
    assert host.authenticate(environ, None, "10.0.0.1") == Identity("oe", 7, "ann")
    assert host.named_database(environ) == "other"
    assert host.request_context(environ, "10.0.0.1") == {
        "remote_addr": "10.0.0.1",
        "http_host": "erp.example",
        "scheme": "https",
        "is_secure": True,
        "root_path": "",
    }


def test_namespaces_authenticate_through_one_host():
    from oe_web_socketio.dispatcher import Dispatcher, DispatchSettings
    from oe_web_socketio.hosts import SessionHost
    from oe_web_socketio.namespace import Namespace, Request

    class Own(Namespace):
        authenticator = _Sessions()

    plain = WSGIHost(lambda environ, auth: (auth or {}).get("token"))
    settings = DispatchSettings(host=plain)
    # The server's host, unless the class checks sessions of its own.
    assert Dispatcher("/", Namespace, settings).host is plain
    own = Dispatcher("/own", Own, settings).host
    assert isinstance(own, SessionHost) and own.authenticator is Own.authenticator
    # Without a host, an authenticator given is a session host's.
    checker = _Sessions()
    assert DispatchSettings(authenticator=checker).host.authenticator is checker
    # A socket asks its host, whichever it is.
    socket = Namespace(None, "/", "sid", Request({}, "::1"), host=plain)
    assert socket.identify({}, {"token": "ada"}) == Identity(None, None, "ada")
    socket = Own(None, "/own", "sid", Request({}, "::1"), host=own)
    assert socket.identify({"HTTP_AUTHORIZATION": SESSION}, None) == Identity(
        "oe", 7, "ann"
    )
    with pytest.raises(AuthenticationError, match="this server cannot check"):
        Namespace(None, "/", "sid", Request({}, "::1")).identify(
            {}, {"session": SESSION.removeprefix("Session ")}
        )


# -- long-polling routes authenticated by a plain WSGI host -----------------


def _serve_route(authenticate):
    from oe_web_socketio import longpolling as lp
    from oe_web_socketio.routing import Router

    registry = lp.LongPolling()

    @registry.route("/me")
    def me(request):
        return {"login": request.login, "uid": request.uid, "db": request.database}

    @registry.route("/open", mustbeauthenticated=False)
    def open_route(request):
        return {"login": request.login}

    settings = lp.Settings(
        prefix="/longpolling",
        timeout=1.0,
        databases=("-",),
        host=WSGIHost(authenticate),
    )
    router = Router()
    lp.add_routes(router, lp.endpoints(registry.routes, settings))
    return router


def _get(router, path, token=None):
    import json

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = int(status.split()[0])

    body = b"".join(router(environ, start_response))
    return answer["status"], json.loads(body)


def _bearer(environ, auth):
    token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
    if token == "boom":
        raise RuntimeError("user store down")
    if token == "bad":
        raise AuthenticationError("unknown token")
    return {"login": token, "uid": 5} if token else None


def test_longpolling_routes_ask_the_host(caplog):
    router = _serve_route(_bearer)
    assert _get(router, "/longpolling/me", "ada") == (
        200,
        {"login": "ada", "uid": 5, "db": "-"},
    )
    assert _get(router, "/longpolling/me") == (
        401,
        {"error": "authentication required"},
    )
    assert _get(router, "/longpolling/me", "bad") == (401, {"error": "unknown token"})
    assert _get(router, "/longpolling/open") == (200, {"login": None})
    with caplog.at_level(logging.ERROR, LOGGER):
        assert _get(router, "/longpolling/me", "boom") == (500, {"error": HOST_FAILURE})
    assert len([r for r in caplog.records if r.exc_info]) == 1
