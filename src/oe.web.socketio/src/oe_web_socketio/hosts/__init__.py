"""Hosts: what differs per host application, behind one small interface.

The server runs beside a host application and serves its users. Everything
that depends on which host it is lives behind :class:`Host`, which the rest
of the server uses without knowing the host:

* :meth:`Host.authenticate`: who a client is, from the WSGI environ of its
  request and the Socket.IO ``auth`` payload (``None`` for plain HTTP),
  or ``None`` when it presents no credentials; for a plain HTTP request
  (a long-polling route), :meth:`Host.authenticate_request`, which also
  logs its refusals, with :meth:`Host.named_database` (the database an
  anonymous request names) and :meth:`Host.request_context` (what the
  host's ORM is told of the request). This is the one way the server
  authenticates anyone: the namespaces and the long-polling routes ask the
  host, never parse credentials themselves;
* :attr:`Host.pools`: read-only cursors on the host's databases
  (:mod:`oe_web_socketio.pool`), or ``None`` for a host without a
  database; with them, :meth:`Host.conninfo` names each database for the
  LISTEN connection of the database bridge;
* :meth:`Host.orm`: read access to the host's records (its ORM), or
  ``None``;
* what the host contributes to the server beside Socket.IO, registered by
  the application without knowing what it is: HTTP routes
  (:meth:`Host.routes`), consumers of database notifications
  (:meth:`Host.consumers`, by ``NOTIFY`` channel) and counters of
  ``/health`` (:meth:`Host.counters`); :meth:`Host.close` ends them.

Two hosts exist: Tryton (the package :mod:`oe_web_socketio.hosts.tryton`:
sessions of ``ir_session``, cursors, Tryton's bus, trytond's models) and
any WSGI application (:mod:`oe_web_socketio.hosts.wsgi`: a callable of the
application authenticates, no database). :class:`SessionHost`, here, is
what both the Tryton host and a server without host build on: sessions
(:func:`oe_web_socketio.auth.credentials_from_request`) validated by an
:class:`~oe_web_socketio.auth.Authenticator`, or refused without one; a
namespace class with an authenticator of its own is served through one.

A host module must not import the host application itself at import time
(trytond, for one, costs seconds to import and reads its own configuration):
the server has to start, and answer, without it. Nothing on the path of a
plain WSGI host imports trytond nor :mod:`oe_web_socketio.hosts.tryton`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from oe_web_socketio.auth import credentials_from_request
from oe_web_socketio.exceptions import AuthenticationError, HostError
from oe_web_socketio.routing import Request

if TYPE_CHECKING:
    from oe_web_socketio.auth import Authenticator, Credentials, Identity
    from oe_web_socketio.pool import CursorPools
    from oe_web_socketio.routing import Route

__all__ = ["Host", "HostError", "SessionHost"]

#: Refusals of plain HTTP requests (:meth:`Host.authenticate_request`): the
#: logger of the long-polling routes, whose lines these were.
logger = logging.getLogger("oe_web_socketio.longpolling")

#: What a client is told when the host failed to check its credentials.
HOST_FAILURE = "the server could not check the credentials"

#: What a client presenting a session is told by a server that has no
#: authenticator to check it.
NO_AUTHENTICATOR = "this server cannot check sessions"


class Host(abc.ABC):
    """What the server needs of its host application.

    :ivar pools: the read-only cursor pools of the host's databases, or
        ``None``: the host has no database (no database bridge, no Tryton
        bus).
    :ivar authenticator: a validator of Tryton sessions (``login:uid:key``)
        for Tryton's bus, or ``None`` for a host without Tryton sessions.
    """

    #: The host's name, for logs: ``tryton``, ``wsgi``.
    name: ClassVar[str] = "host"

    pools: CursorPools | None = None
    authenticator: Authenticator | None = None

    @abc.abstractmethod
    def authenticate(
        self, environ: Mapping[str, Any], auth: Any, address: str | None
    ) -> Identity | None:
        """Who presents the credentials of a request.

        :param environ: the WSGI environ of the request (the handshake, for
            Socket.IO; an empty mapping for the ``session_id`` event).
        :param auth: the Socket.IO ``auth`` payload (any JSON value, or
            ``None``; ``None`` for plain HTTP requests).
        :param address: the client's address (see
            :func:`oe_web_socketio.auth.client_address`).
        :returns: the user, or ``None`` if no credentials are presented.
        :raises AuthenticationError: credentials are presented and refused;
            its message is shown to the client.
        :raises DatabaseUnavailable: they cannot be checked now.
        :raises HostError: the host application failed (logged).
        """

    def authenticate_request(
        self, environ: Mapping[str, Any], address: str | None
    ) -> Identity | None:
        """Who sends a plain HTTP request (a long-polling route), or
        ``None`` if it presents no credentials: :meth:`authenticate`
        without ``auth`` payload, by default.

        Each refusal is logged here, one line (the caller logs none).

        :raises AuthenticationError: credentials are presented and refused.
        :raises DatabaseUnavailable: they cannot be checked now.
        :raises HostError: the host application failed (logged).
        """
        try:
            return self.authenticate(environ, None, address)
        except AuthenticationError as exc:
            log_refusal(environ, address, exc)
            raise

    def administers(self, identity: Identity) -> bool:
        """Whether *identity* (authenticated) administers the host
        application, and may watch every socket (the Admin UI, see
        :mod:`oe_web_socketio.admin`); nobody does by default.

        :raises DatabaseUnavailable: it cannot be told now.
        """
        return False

    def named_database(self, environ: Mapping[str, Any]) -> str | None:
        """The database a plain HTTP request names (Tryton: its
        ``X-Tryton-Database`` header), or ``None``: the server's first.
        An authenticated request reads its user's database instead."""
        return None

    def request_context(
        self, environ: Mapping[str, Any], address: str | None
    ) -> Mapping[str, Any] | None:
        """What the host's ORM (:meth:`orm`) is told of a plain HTTP
        request, or ``None``: for Tryton, trytond's ``_request`` context."""
        return None

    def conninfo(self, database: str) -> str:
        """The libpq connection string of *database*.

        :raises LookupError: the host has no database.
        """
        raise LookupError(f"the {self.name} host has no database {database!r}")

    def orm(self) -> Any | None:
        """Load and return the host's models for long-polling handlers
        (an object like :class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`),
        or ``None`` for a host without. Called once, after the patch, only
        when routes are served."""
        return None

    def routes(self) -> Iterable[Route]:
        """The HTTP routes the host serves beside Socket.IO (Tryton: its
        bus); none by default. Asked once, when the application is built."""
        return ()

    def consumers(self) -> Mapping[str, Callable[[str, str], None]]:
        """What to call with ``(database, payload)`` for each ``NOTIFY`` on
        a channel of the host's databases, by channel (Tryton: ``bus``);
        none by default. Called in the order of the notifications, from
        the listener's greenlet: a consumer must not block nor raise."""
        return {}

    def counters(self) -> Mapping[str, Callable[[], Any]]:
        """Figures of the host for ``/health``, by name (each callable
        returns a JSON value): ``pools``, the cursors of each database in
        use, idle and awaited, when the host has cursor pools."""
        if self.pools is None:
            return {}
        return {"pools": self.pools.all_stats}

    def close(self) -> None:
        """Release what the host holds (the cursor pools) and end what it
        contributed."""
        if self.pools is not None:
            self.pools.close()


class SessionHost(Host):
    """Clients present sessions (``login:uid:key``, see
    :func:`oe_web_socketio.auth.credentials_from_request`), validated by
    *authenticator*.

    :param authenticator: validates the sessions; ``None``: every session
        presented is refused (:data:`NO_AUTHENTICATOR`), anonymous clients
        are let through. A server built without a host uses this one, and
        a namespace class with an authenticator of its own one with it.
    :param session_cookie: the cookie that may carry a session besides the
        ``auth`` payload and the ``Authorization`` header (see
        :func:`oe_web_socketio.auth.credentials_from_request`), or ``None``
        (the class's :attr:`session_cookie`).

    Its refusals of a plain HTTP request are logged once: a malformed
    session or a missing authenticator here, a session refused by the
    authenticator, which logs each refusal, there.
    """

    name = "sessions"

    #: The cookie of the host's sessions (Tryton's ``tryton_session``);
    #: ``None``: sessions come in the ``auth`` payload or the
    #: ``Authorization`` header only.
    session_cookie: str | None = None

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        *,
        session_cookie: str | None = None,
    ) -> None:
        self.authenticator = authenticator
        if session_cookie is not None:
            self.session_cookie = session_cookie

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.authenticator!r}>"

    def authenticate(
        self, environ: Mapping[str, Any], auth: Any, address: str | None
    ) -> Identity | None:
        """The session the client presents, validated; ``None`` without."""
        credentials = credentials_from_request(environ, auth, self.session_cookie)
        if credentials is None:
            return None
        return self.check(credentials, address)

    def authenticate_request(
        self, environ: Mapping[str, Any], address: str | None
    ) -> Identity | None:
        """The session a plain HTTP request presents (header or cookie),
        for the database it names (:meth:`named_database`) or the default
        one; ``None`` without a session.

        :raises AuthenticationError: the session is malformed or refused
            (logged once), or nothing can check it.
        :raises DatabaseUnavailable: it cannot be checked now.
        """
        try:
            credentials = credentials_from_request(environ, None, self.session_cookie)
            if credentials is not None and self.authenticator is None:
                raise AuthenticationError(NO_AUTHENTICATOR)
        except AuthenticationError as exc:
            log_refusal(environ, address, exc)
            raise
        if credentials is None:
            return None
        named = self.named_database(environ)
        # The authenticator logs its refusals, one line each.
        identity = self.check(dataclasses.replace(credentials, database=named), address)
        if identity.db is None:  # a bug: sessions are of a database
            raise RuntimeError(f"{identity!r} names no database")
        return identity

    def check(self, credentials: Credentials, address: str | None) -> Identity:
        """Validate *credentials* presented from *address*.

        :raises AuthenticationError: they are refused, or there is no
            authenticator.
        """
        if self.authenticator is None:
            raise AuthenticationError(NO_AUTHENTICATOR)
        return self.authenticator.authenticate(credentials, address)


def log_refusal(
    environ: Mapping[str, Any], address: str | None, exc: AuthenticationError
) -> None:
    """The one line of a plain HTTP request refused for its credentials
    (*address*, the client's, is not in it: the peer's is, as in the
    other lines of the routes)."""
    http = Request(environ)
    logger.warning(
        "Refused %s %s from %s: %s", http.method, http.path, http.client, exc
    )
