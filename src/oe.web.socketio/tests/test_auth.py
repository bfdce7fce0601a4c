"""Tests of :mod:`oe_web_socketio.auth`: parsing only, no database."""

from __future__ import annotations

import base64

import pytest
from oe_web_socketio.auth import (
    CROSS_ORIGIN_COOKIE,
    MAX_UID_DIGITS,
    AllowedOrigins,
    Credentials,
    client_address,
    credentials_from_request,
    from_own_origin,
    is_same_origin,
    parse_session,
)
from oe_web_socketio.exceptions import AuthenticationError
from oe_web_socketio.hosts.tryton.sessions import SESSION_COOKIE

pytestmark = pytest.mark.timeout(10)

KEY = "0123456789abcdef" * 4


def read_credentials(environ: dict, auth: object) -> Credentials | None:
    """What a host whose sessions come in Tryton's cookie reads."""
    return credentials_from_request(environ, auth, SESSION_COOKIE)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- parse_session ---------------------------------------------------------


def test_parse_session_as_the_web_client_builds_it():
    credentials = parse_session(b64(f"admin:1:{KEY}"), "oe")
    assert credentials == Credentials(login="admin", uid=1, key=KEY, database="oe")


def test_parse_session_login_may_contain_colons_and_non_ascii():
    credentials = parse_session(b64(f"dom:jérôme:42:{KEY}"))
    assert (credentials.login, credentials.uid, credentials.key) == (
        "dom:jérôme",
        42,
        KEY,
    )
    assert credentials.database is None


def test_parse_session_ignores_surrounding_whitespace():
    assert parse_session(f"  {b64(f'admin:1:{KEY}')}\n").uid == 1


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64!",
        "YWRtaW46MTprZXk",  # padding missing
        b64(f"admin:1:{KEY}") + "@",
        "é" + b64(f"admin:1:{KEY}"),  # not ASCII
        base64.b64encode(b"admin:1:\xff\xfe").decode(),  # not UTF-8
        b64(f"admin1{KEY}"),  # no separator
        b64(f"admin:{KEY}"),  # one separator
        b64(f":1:{KEY}"),  # no login
        b64("admin:1:"),  # no key
        b64(f"admin::{KEY}"),  # no uid
        b64(f"admin:-1:{KEY}"),
        b64(f"admin:1.0:{KEY}"),
        b64(f"admin: 1:{KEY}"),
        b64(f"admin:²:{KEY}"),  # str.isdigit() but not int()
        b64(f"admin:١:{KEY}"),  # int() reads it, but it is no ASCII digit
        b64(f"admin:{'9' * (MAX_UID_DIGITS + 1)}:{KEY}"),
        b64(f"admin:{'1' * 5000}:{KEY}"),  # int() would raise ValueError
    ],
)
def test_parse_session_refuses_malformed(value):
    with pytest.raises(AuthenticationError) as info:
        parse_session(value)
    assert str(info.value) == "malformed session"


def test_parse_session_accepts_the_longest_uid():
    uid = "9" * MAX_UID_DIGITS
    assert parse_session(b64(f"admin:{uid}:{KEY}")).uid == int(uid)


def test_credentials_never_show_the_key():
    credentials = parse_session(b64(f"admin:1:{KEY}"))
    assert KEY not in repr(credentials)
    assert KEY not in str(credentials)
    assert "admin" in repr(credentials)


# -- credentials_from_request ----------------------------------------------

PAYLOAD_KEY = "a" * 64
HEADER_KEY = "b" * 64
COOKIE_KEY = "c" * 64


def environ(header: str | None = None, cookie: str | None = None) -> dict:
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/socket.io/"}
    if header is not None:
        env["HTTP_AUTHORIZATION"] = header
    if cookie is not None:
        env["HTTP_COOKIE"] = cookie
    return env


def test_cookies_are_read_only_when_the_host_names_one():
    env = environ(cookie=f"tryton_session=admin:1:{COOKIE_KEY}")
    assert credentials_from_request(env, None) is None
    assert credentials_from_request(env, None, "other") is None
    assert credentials_from_request(env, None, "tryton_session") == Credentials(
        "admin", 1, COOKIE_KEY
    )


def test_nothing_presented():
    assert read_credentials(environ(), None) is None
    assert read_credentials(environ(), {}) is None
    assert read_credentials(environ(), {"database": "oe"}) is None


def test_payload_wins_over_header_and_cookie():
    credentials = read_credentials(
        environ(
            header=f"Session {b64(f'header:2:{HEADER_KEY}')}",
            cookie=f"tryton_session=cookie:3:{COOKIE_KEY}",
        ),
        {"session": b64(f"payload:1:{PAYLOAD_KEY}"), "database": "oe"},
    )
    assert credentials == Credentials("payload", 1, PAYLOAD_KEY, "oe")


def test_header_wins_over_cookie_and_takes_the_payload_database():
    credentials = read_credentials(
        environ(
            header=f"Session {b64(f'header:2:{HEADER_KEY}')}",
            cookie=f"tryton_session=cookie:3:{COOKIE_KEY}",
        ),
        {"database": "oe"},
    )
    assert credentials == Credentials("header", 2, HEADER_KEY, "oe")


@pytest.mark.parametrize("scheme", ["Session", "session", "SESSION"])
def test_header_scheme_is_case_insensitive(scheme):
    credentials = read_credentials(
        environ(header=f"{scheme} {b64(f'header:2:{HEADER_KEY}')}"), None
    )
    assert credentials == Credentials("header", 2, HEADER_KEY)


@pytest.mark.parametrize(
    "header", ["Basic YWRtaW46YWRtaW4=", "Bearer abc", "Session", "Session ", ""]
)
def test_other_or_empty_authorization_falls_back_to_the_cookie(header):
    credentials = read_credentials(
        environ(header=header, cookie=f"tryton_session=cookie:3:{COOKIE_KEY}"), None
    )
    assert credentials == Credentials("cookie", 3, COOKIE_KEY)


def test_cookie_alone():
    credentials = read_credentials(
        environ(cookie=f"tryton_session=admin:1:{COOKIE_KEY}"), {"database": "oe"}
    )
    assert credentials == Credentials("admin", 1, COOKIE_KEY, "oe")


@pytest.mark.parametrize(
    "cookie",
    [
        # Other applications' cookies that http.cookies.SimpleCookie
        # chokes on, dropping every cookie of the header.
        'prefs={"a":1}; tryton_session=admin:1:' + COOKIE_KEY,
        "greeting=hello world; tryton_session=admin:1:" + COOKIE_KEY,
        "tryton_session=admin:1:" + COOKIE_KEY + '; broken="x',
        "  a=1;tryton_session = admin:1:" + COOKIE_KEY + " ;b=2",
        # The first one wins, as in werkzeug (the most specific path).
        f"tryton_session=admin:1:{COOKIE_KEY}; tryton_session=other:2:{KEY}",
    ],
)
def test_cookie_among_others(cookie):
    credentials = read_credentials(environ(cookie=cookie), None)
    assert credentials == Credentials("admin", 1, COOKIE_KEY)


def test_cookie_quoted_by_werkzeug():
    # werkzeug.http.dump_cookie("tryton_session", "jérôme d:7:<key>"): a
    # space and non-ASCII letters make it quote, bytes as octal escapes.
    quoted = '"j\\303\\251r\\303\\264me d:7:' + COOKIE_KEY + '"'
    credentials = read_credentials(environ(cookie=f"tryton_session={quoted}"), None)
    assert credentials == Credentials("jérôme d", 7, COOKIE_KEY)


def test_cookie_of_another_name_is_ignored():
    cookie = f"xtryton_session=admin:1:{KEY}; tryton_sessionx=admin:1:{KEY}"
    assert read_credentials(environ(cookie=cookie), None) is None


@pytest.mark.parametrize(
    ("auth", "header", "cookie", "reason"),
    [
        ([], None, None, "the auth payload must be an object"),
        ("session", None, None, "the auth payload must be an object"),
        ({"database": 1}, None, None, "database must be a string"),
        ({"session": 1}, None, None, "session must be a string"),
        ({"session": "!!"}, None, None, "malformed session"),
        # A malformed payload session is refused even with a valid header.
        ({"session": "!!"}, f"Session {b64(f'a:1:{KEY}')}", None, "malformed session"),
        (None, "Session !!", f"tryton_session=a:1:{KEY}", "malformed session"),
        (None, None, "tryton_session=admin:x:" + KEY, "malformed session"),
        (None, None, "tryton_session=" + KEY, "malformed session"),
    ],
)
def test_malformed_credentials_are_refused(auth, header, cookie, reason):
    with pytest.raises(AuthenticationError) as info:
        read_credentials(environ(header=header, cookie=cookie), auth)
    assert str(info.value) == reason


def test_an_empty_cookie_counts_as_none():
    assert read_credentials(environ(cookie="tryton_session="), None) is None


# -- the cookie from another origin -----------------------------------------

HOST = "erp.example.com:8080"


def browser_environ(site: str | None = None, origin: str | None = None) -> dict:
    """A request to HOST carrying the cookie, as a browser sends it."""
    env = environ(cookie=f"tryton_session=admin:1:{COOKIE_KEY}")
    env["HTTP_HOST"] = HOST
    if site is not None:
        env["HTTP_SEC_FETCH_SITE"] = site
    if origin is not None:
        env["HTTP_ORIGIN"] = origin
    return env


@pytest.mark.parametrize(
    ("site", "origin"),
    [
        (None, None),  # a program, or a page the user opened
        ("same-origin", f"http://{HOST}"),
        ("none", None),  # an address typed, a bookmark
        (None, f"http://{HOST}"),  # a WebSocket handshake of our page
        (None, f"https://{HOST.upper()}"),  # hosts compare as trytond does
        # Sec-Fetch-Site decides: behind a proxy that rewrites Host, the
        # browser still knows the page is ours.
        ("same-origin", "http://internal:8080"),
    ],
)
def test_the_cookie_is_accepted_from_our_own_origin(site, origin):
    credentials = read_credentials(browser_environ(site, origin), None)
    assert credentials == Credentials("admin", 1, COOKIE_KEY)
    assert from_own_origin(browser_environ(site, origin))


@pytest.mark.parametrize(
    ("site", "origin"),
    [
        # Another port of the host, a sibling subdomain: same site, so
        # SameSite=Strict lets the browser send the cookie.
        ("same-site", "http://erp.example.com:9999"),
        ("same-site", None),  # a no-cors GET (an <img>) has no Origin
        ("cross-site", "https://evil.example.org"),
        ("SAME-SITE", None),
        (None, "http://erp.example.com:9999"),  # a WebSocket handshake
        (None, "https://evil.example.org"),
        (None, "null"),  # a sandboxed frame, a file: page
        (None, "http://[::1"),  # not a URL
    ],
)
def test_the_cookie_is_refused_from_another_origin(site, origin):
    with pytest.raises(AuthenticationError) as info:
        read_credentials(browser_environ(site, origin), None)
    assert str(info.value) == CROSS_ORIGIN_COOKIE
    assert not from_own_origin(browser_environ(site, origin))


def test_credentials_a_page_presents_are_not_ambient():
    # Another origin may present a session itself (CORS decides).
    env = browser_environ("cross-site", "https://partner.example.org")
    env["HTTP_AUTHORIZATION"] = f"Session {b64(f'bob:2:{HEADER_KEY}')}"
    assert read_credentials(env, None) == Credentials("bob", 2, HEADER_KEY)
    payload = {"session": b64(f"eve:3:{PAYLOAD_KEY}")}
    assert read_credentials(env, payload) == Credentials("eve", 3, PAYLOAD_KEY)


def test_same_origin():
    env = {"HTTP_HOST": HOST}
    assert is_same_origin(f"http://{HOST}", env)
    assert not is_same_origin("http://erp.example.com", env)
    assert not is_same_origin("null", env)
    assert not is_same_origin("", env)
    assert not is_same_origin(f"http://{HOST}", {})


def test_allowed_origins_are_ours_and_the_listed_ones():
    allowed = AllowedOrigins(frozenset({"https://partner.example.org"}))
    env = {"HTTP_HOST": HOST}
    assert allowed(f"http://{HOST}", env)
    assert allowed("https://partner.example.org", env)
    assert not allowed("https://evil.example.org", env)
    assert not allowed(None, env)  # python-engineio asks without an Origin too


# -- client_address --------------------------------------------------------

TRUSTED = ("127.0.0.1", "::1", "10.0.0.0/8")


def addr_environ(peer: str | None, forwarded: str | None = None) -> dict:
    env: dict = {}
    if peer is not None:
        env["REMOTE_ADDR"] = peer
    if forwarded is not None:
        env["HTTP_X_FORWARDED_FOR"] = forwarded
    return env


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # Direct clients: the peer; their X-Forwarded-For is a forgery.
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        ("203.0.113.7", "127.0.0.1", "203.0.113.7"),
        # Our proxy: the last entry, the one it appended; the ones before
        # come from the client and may be forged.
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6,198.51.100.1 ", "198.51.100.1"),
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),  # a trusted network
        ("::1", "198.51.100.1", "198.51.100.1"),
        # An IPv4 proxy seen through a dual-stack socket.
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),
        # A proxy that adds nothing: the proxy itself.
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.1, ", "127.0.0.1"),
        # Written as trytond writes it: str(ipaddress.ip_address(...)).
        ("127.0.0.1", "2001:DB8:0:0::1", "2001:db8::1"),
        ("2001:0db8::0007", None, "2001:db8::7"),
        # Not an address: kept, so that it matches no session.
        ("127.0.0.1", "unknown", "unknown"),
        ("not-an-ip", "198.51.100.1", "not-an-ip"),
        # No peer at all (not over TCP): no address.
        (None, "198.51.100.1", None),
        ("", "198.51.100.1", None),
    ],
)
def test_client_address(peer, forwarded, expected):
    assert client_address(addr_environ(peer, forwarded), TRUSTED) == expected


def test_client_address_trusts_nobody_by_default_list():
    env = addr_environ("127.0.0.1", "198.51.100.1")
    assert client_address(env, ()) == "127.0.0.1"


def test_client_address_skips_invalid_trusted_entries():
    env = addr_environ("127.0.0.1", "198.51.100.1")
    assert client_address(env, ("nonsense", "127.0.0.1")) == "198.51.100.1"
