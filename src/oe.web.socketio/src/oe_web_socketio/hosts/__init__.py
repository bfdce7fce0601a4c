"""Hosts: what differs per host application, behind one small interface.

The server runs beside a host application and serves its users. Everything
that depends on which host it is lives behind :class:`Host`, which the rest
of the server uses without knowing the host:

* :meth:`Host.authenticate`: who a client is, from the WSGI environ of its
  request and the Socket.IO ``auth`` payload (``None`` for plain HTTP),
  or ``None`` when it presents no credentials;
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
application authenticates, no database).

A host module must not import the host application itself at import time
(trytond, for one, costs seconds to import and reads its own configuration):
the server has to start, and answer, without it. Nothing on the path of a
plain WSGI host imports trytond nor :mod:`oe_web_socketio.hosts.tryton`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from oe_web_socketio.exceptions import HostError

if TYPE_CHECKING:
    from oe_web_socketio.auth import Authenticator, Identity
    from oe_web_socketio.pool import CursorPools
    from oe_web_socketio.routing import Route

__all__ = ["Host", "HostError"]

#: What a client is told when the host failed to check its credentials.
HOST_FAILURE = "the server could not check the credentials"


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
        returns a JSON value); none by default."""
        return {}

    def close(self) -> None:
        """Release what the host holds (the cursor pools) and end what it
        contributed."""
        if self.pools is not None:
            self.pools.close()
