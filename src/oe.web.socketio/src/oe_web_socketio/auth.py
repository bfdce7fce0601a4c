"""Who a client is: credentials in, identity out. No Socket.IO here.

A client proves who it is with the session the Tryton web client holds
after ``common.db.login``: a login, a user id and a 64-hex-digit key. It may
present it, in order of precedence:

1. in the Socket.IO ``auth`` payload, ``{"session": base64("login:uid:key"),
   "database": "oe"}`` (``database`` optional), the way the web client
   builds its ``Authorization: Session …`` header;
2. in an ``Authorization: Session base64("login:uid:key")`` header;
3. in a cookie, ``login:uid:key`` unencoded, when the host names one
   (:attr:`~oe_web_socketio.hosts.SessionHost.session_cookie`: Tryton 8's
   ``tryton_session``, which browsers send only to URLs under
   ``/<database>/``, its path; a server without a host reads no cookie).

The session's format is the server's protocol, that of the web clients of
the OpenERP family, which any :class:`Authenticator` may validate; which
cookie carries it is the host's (Tryton's, in
:mod:`oe_web_socketio.hosts.tryton.sessions`).

The cookie is an ambient credential: the browser sends it with every
request to its path, whichever page makes the request, and ``SameSite``
(trytond sets ``Strict``) does not stop a page of the same *site* and
another origin (another port of the host, a sibling subdomain). So the
cookie is accepted only from a request of the server's own origin (see
:func:`from_own_origin`); credentials a page presents itself (the payload,
the header) are not ambient, and the allowed origins
(:attr:`~oe_web_socketio.config.Config.cors_allowed_origins`) may use them.

Parsing (this module) is kept apart from validation (an
:class:`Authenticator`, per host application: Tryton checks ``ir_session``
read-only), so each is tested on its own and other hosts plug in theirs.

Invariants: parsing never touches a database; every failure is an
:class:`~oe_web_socketio.exceptions.AuthenticationError` whose message can be
shown to the client.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from oe_web_socketio.exceptions import AuthenticationError

#: ``Sec-Fetch-Site`` of a request a page of the origin it is sent to made
#: (``same-origin``), or the user (an address typed, a bookmark: ``none``).
OWN_FETCH_SITES = frozenset({"same-origin", "none"})

#: Why a session cookie is refused from another origin (shown to the client).
CROSS_ORIGIN_COOKIE = "the session cookie is not accepted from another origin"

#: Most digits of a user id: more cannot be a database id (and ``int()``
#: refuses strings of thousands of digits).
MAX_UID_DIGITS = 18


@dataclass(frozen=True)
class Credentials:
    """A session as a client presented it; not yet checked."""

    login: str
    uid: int
    key: str
    #: The database the client names, or ``None`` for the server's default.
    database: str | None = None

    def __repr__(self) -> str:
        # Never log the key.
        return (
            f"Credentials(login={self.login!r}, uid={self.uid}, "
            f"database={self.database!r})"
        )


@dataclass(frozen=True)
class Identity:
    """A client whose session was validated.

    :ivar db: its database (Tryton's); ``None`` for a host without one.
    :ivar uid: its user id (an :class:`int` for Tryton); ``None`` if the
        host gives none.
    :ivar login: its login.
    """

    db: str | None
    uid: int | str | None
    login: str


class Authenticator(Protocol):
    """Validates credentials against a host application (e.g. Tryton)."""

    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        """Return who presented *credentials* from *address*, or raise
        :class:`AuthenticationError`. Must not write to any database."""
        ...


def parse_session(value: str, database: str | None = None) -> Credentials:
    """Decode ``base64("login:uid:key")`` as the Tryton web client builds it."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthenticationError("malformed session") from None
    return _split_session(decoded, database)


def _split_session(decoded: str, database: str | None) -> Credentials:
    # The login may contain ':'; the uid and key cannot.
    login, sep, rest = decoded.rpartition(":")
    login, sep2, uid = login.rpartition(":")
    key = rest
    # str.isdigit() also accepts digits int() refuses, such as '²'.
    if not (
        sep
        and sep2
        and login
        and key
        and uid.isascii()
        and uid.isdigit()
        and len(uid) <= MAX_UID_DIGITS
    ):
        raise AuthenticationError("malformed session")
    return Credentials(login=login, uid=int(uid), key=key, database=database)


def credentials_from_request(
    environ: Mapping[str, Any], auth: Any, cookie: str | None = None
) -> Credentials | None:
    """The credentials a connecting client presents, or ``None`` if none.

    :param environ: the WSGI environ of the handshake request.
    :param auth: the Socket.IO ``auth`` payload (any JSON value, or None).
    :param cookie: the name of the cookie that may carry a session (the
        host's), or ``None``: cookies are not read.
    :raises AuthenticationError: credentials are present but malformed.
    """
    if auth is not None:
        if not isinstance(auth, Mapping):
            raise AuthenticationError("the auth payload must be an object")
        database = auth.get("database")
        if database is not None and not isinstance(database, str):
            raise AuthenticationError("database must be a string")
        session = auth.get("session")
        if session is not None:
            if not isinstance(session, str):
                raise AuthenticationError("session must be a string")
            return parse_session(session, database)
    else:
        database = None
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "session" and value:
        return parse_session(value, database)
    if cookie is None:
        return None
    value = _cookie(environ.get("HTTP_COOKIE", ""), cookie)
    if value:
        if not from_own_origin(environ):
            raise AuthenticationError(CROSS_ORIGIN_COOKIE)
        return _split_session(value, database)
    return None


def from_own_origin(environ: Mapping[str, Any]) -> bool:
    """Whether a request may carry ambient credentials (the cookie): no
    browser sent it from a page of another origin, as far as it tells.

    Browsers send ``Sec-Fetch-Site`` to secure origins (HTTPS, and
    ``localhost``/``127.0.0.1`` over HTTP), hence with every ``Secure``
    cookie such as trytond's: when present it decides, even for a ``GET``
    without ``Origin`` (an ``<img>``, a ``no-cors`` fetch). Otherwise the
    ``Origin`` header decides (a WebSocket handshake has one, not always
    ``Sec-Fetch-Site``): it must be the request's own (see
    :func:`is_same_origin`). A request with neither did not come from a
    page of another origin of a current browser: a program, or a page
    the user opened.
    """
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site:
        return str(site).strip().lower() in OWN_FETCH_SITES
    origin = environ.get("HTTP_ORIGIN")
    if not origin:
        return True
    return is_same_origin(str(origin), environ)


@dataclass(frozen=True)
class AllowedOrigins:
    """The pages that may use the server: those of its own origin (see
    :func:`is_same_origin`) and those of *origins*.

    A callable python-engineio takes as ``cors_allowed_origins``: given a
    list instead, it allows the listed origins only, and refuses the
    server's own pages (a browser sends ``Origin`` with every WebSocket
    handshake).
    """

    origins: frozenset[str]

    def __call__(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        if not origin:
            return False
        return origin in self.origins or is_same_origin(origin, environ)


def is_same_origin(origin: str, environ: Mapping[str, Any]) -> bool:
    """Whether *origin* (an ``Origin`` header) is the origin the request was
    sent to: its ``host[:port]`` is the request's ``Host``, as trytond
    compares them (behind nginx, ``Host`` is the browser's: the appliance
    passes ``$http_host``). ``null`` (a sandboxed frame, a ``file:`` page)
    is no origin's own.
    """
    if origin == "null":
        return False
    try:
        netloc = urllib.parse.urlsplit(origin).netloc
    except ValueError:
        return False
    host = str(environ.get("HTTP_HOST", ""))
    return bool(netloc) and netloc.lower() == host.lower()


#: A backslash escape in a quoted cookie value: three octal digits (a byte)
#: or any one character.
_COOKIE_ESCAPE = re.compile(rb"\\([0-3][0-7]{2}|.)")


def _cookie(header: str, name: str) -> str | None:
    """The value of the first cookie *name* in a ``Cookie`` *header*.

    Reads what werkzeug (hence trytond) writes: a token, or a quoted string
    with backslash escapes (``\\ooo`` for each byte that is not printable
    ASCII, and for ``;`` and ``,``: a value never holds a raw ``;``, as RFC
    6265 wants). Unlike :class:`http.cookies.SimpleCookie`, which drops
    every cookie of a header where one is malformed (a space, JSON), a
    malformed cookie of another application does not hide ours.
    """
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or key.strip(" \t") != name:
            continue
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            unescaped = _COOKIE_ESCAPE.sub(
                lambda escape: _unescape_cookie_byte(escape.group(1)),
                value[1:-1].encode("latin-1", "replace"),
            )
            value = unescaped.decode("utf-8", "replace")
        return value
    return None


def _unescape_cookie_byte(escape: bytes) -> bytes:
    return escape if len(escape) == 1 else bytes([int(escape, 8)])


def client_address(
    environ: Mapping[str, Any], trusted_proxies: Iterable[str]
) -> str | None:
    """The address of the client, as Tryton recorded it in ``ir_session``.

    ``X-Forwarded-For`` is believed only when the peer is one of
    *trusted_proxies* (our nginx), and then only its last entry: the one
    that proxy added, which is also the one trytond believes with
    ``[web] num_proxies = 1``. Anyone else could forge the header.

    An address is written the way trytond writes it,
    ``str(ipaddress.ip_address(…))`` (``2001:db8::1``, not
    ``2001:DB8:0::1``), so that the two compare equal. A forwarded value
    that is not an address is returned as it is: it matches no session.
    """
    peer = environ.get("REMOTE_ADDR") or None
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if peer is not None and forwarded and _is_trusted(peer, trusted_proxies):
        last = forwarded.split(",")[-1].strip()
        if last:
            return _normalize(last)
    return None if peer is None else _normalize(peer)


def _normalize(address: str) -> str:
    # Once per request (the log rate limit's key): parsing an address
    # costs more than the rest of that key, and clients come back. What
    # is cached is short (an IPv6 address with a zone fits in 64).
    if len(address) <= 64:
        return _normalize_cached(address)
    return _normalize_text(address)


def _normalize_text(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


_normalize_cached = functools.lru_cache(maxsize=1024)(_normalize_text)


def _is_trusted(peer: str, trusted_proxies: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    # A dual-stack socket shows an IPv4 proxy as ::ffff:127.0.0.1.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for proxy in trusted_proxies:
        try:
            if address in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False
