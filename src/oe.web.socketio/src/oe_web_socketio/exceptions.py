"""Exceptions of :mod:`oe_web_socketio`: every one the package defines.

Invariants:

* Every exception raised on purpose by this package derives from
  :class:`OeWebSocketIOError`, so a caller can tell our errors apart from
  bugs. The other modules import their exceptions from here and re-export
  the ones they made public before (``from oe_web_socketio.limits import
  QueueFull`` still works).
* Three families sit under the root:

  - :class:`UserError`: a fault of whoever set the server up (its
    configuration, command line, a namespace or route declared wrong, a
    port already taken). Raised while the server starts; the command line
    reports any of them in one line, without a traceback
    (:func:`oe_web_socketio.cli.main`).
  - :class:`ClientError`: what a client sent is refused (a bad session, a
    refused event, a malformed packet or request). The client is told,
    the server logs at most one line, never a traceback.
  - the others are faults or signals of the running server (a database
    unavailable, the host failing, a queue full, a poll timing out): the
    code that raises them documents who catches them.

* An exception carries its context as attributes, and its message is
  meant to be shown as is.
* This module imports only the standard library, so that every module
  can import it; what it says of the classes named in messages is a
  :class:`~typing.Protocol` of the attributes it reads.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Protocol


class _Registered(Protocol):
    """What a message says of a namespace registration
    (:class:`oe_web_socketio.sockets.Registration`)."""

    @property
    def path(self) -> str: ...


class _Routed(Protocol):
    """What a message says of a route (:class:`oe_web_socketio.routing.Route`)."""

    @property
    def path(self) -> str: ...

    @property
    def endpoint(self) -> Any: ...


class OeWebSocketIOError(Exception):
    """Root of the exceptions raised by :mod:`oe_web_socketio`."""


class UserError(OeWebSocketIOError):
    """A fault of whoever set the server up, not a bug: the message says
    what to change, and is shown in one line without a traceback."""


class ClientError(OeWebSocketIOError):
    """What a client sent is refused; the client is told why and the server
    logs at most one line about it."""


class ConfigError(UserError):
    """A configuration value is missing, unknown or invalid.

    :param problem: what is wrong, e.g. ``"must be at least 1, got 0"``.
    :param key: the configuration key at fault, or ``None`` when the fault
        is not about one key (an unreadable file, a syntax error).
    :param source: where the value came from (a file path), or ``None``.
    """

    def __init__(
        self, problem: str, key: str | None = None, source: str | None = None
    ) -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(problem, key, source)

    def with_source(self, source: str) -> ConfigError:
        """Return a copy of this error that names *source*."""
        return ConfigError(self.problem, key=self.key, source=source)

    def __str__(self) -> str:
        parts = []
        if self.source is not None:
            parts.append(self.source)
        if self.key is not None:
            parts.append(self.key)
        parts.append(self.problem)
        return ": ".join(parts)


class ListenError(UserError):
    """The server cannot listen on the configured address.

    :param interface: the interface (host) the server tried to bind.
    :param port: the TCP port it tried to bind.
    :param errno: the ``errno`` of the underlying :class:`OSError`
        (e.g. :data:`errno.EADDRINUSE`), or ``None``.
    :param reason: the system's description of the failure.
    """

    def __init__(
        self, interface: str, port: int, errno: int | None, reason: str
    ) -> None:
        self.interface = interface
        self.port = port
        self.errno = errno
        self.reason = reason
        super().__init__(interface, port, errno, reason)

    def __str__(self) -> str:
        return f"cannot listen on port {self.port} on {self.interface}: {self.reason}"


class AuthenticationError(ClientError):
    """A client could not prove who it is; the message is sent to it.

    Raised for a missing, malformed, wrong, expired or forged session, and
    for an unknown database. The message never says which of the session's
    parts was wrong (that would help forging).

    :param reason: what the client is told, e.g. ``"invalid session"``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return self.reason


class DatabaseUnavailable(OeWebSocketIOError):
    """A database cannot serve a query now; the client should try again later.

    Raised when no connection to *database* can be opened (PostgreSQL is
    down or refuses us), when a connection breaks while in use, and when
    the pools are closed (the server is stopping). It is an internal
    fault, not the client's: tell the client "try again later", not why.

    :param database: the name of the database.
    :param reason: what went wrong, for the log.
    """

    def __init__(self, database: str, reason: str) -> None:
        self.database = database
        self.reason = reason
        super().__init__(database, reason)

    def __str__(self) -> str:
        return f"database {self.database!r} unavailable: {self.reason}"


class PoolTimeout(DatabaseUnavailable):
    """Every connection of the read-only pool of a database stayed in use
    for *timeout* seconds.

    A kind of :class:`DatabaseUnavailable`: to the client it means the same,
    "try again later"; to the operator, that ``max_cursor`` is too small for
    the load or that queries hold their cursor too long.

    :param database: the name of the database.
    :param timeout: the seconds waited for a free connection.
    """

    def __init__(self, database: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            database, f"no free connection in the pool within {timeout:g} s"
        )
        self.args = (database, timeout)

    def __str__(self) -> str:
        return f"database {self.database!r} busy: {self.reason}"


# -- Faults of the set-up (UserError) ----------------------------------------


class ClusterMismatch(UserError):
    """This worker's configuration disagrees with the running workers' of
    its database (another broker, another Redis, another database behind
    the same Redis): it refuses to start (see
    :mod:`oe_web_socketio.pubsub.cluster`)."""


class UsageError(UserError):
    """The command line is invalid; the message says why."""


class NamespaceError(UserError, ValueError):
    """A namespace cannot be registered: a bad path or class, or a class
    that cannot be imported."""


class DuplicateNamespaceError(NamespaceError):
    """Two registrations claim the same path.

    :ivar existing: the registration kept.
    :ivar duplicate: the registration refused.
    """

    def __init__(self, existing: _Registered, duplicate: _Registered) -> None:
        self.existing = existing
        self.duplicate = duplicate
        super().__init__(existing, duplicate)

    def __str__(self) -> str:
        return (
            f"namespace {self.duplicate.path!r} registered twice: "
            f"by {self.existing} and by {self.duplicate}"
        )


class RouteError(UserError, ValueError):
    """A long-polling route is declared wrong, or cannot be loaded.

    :param route: the route's path as declared, or ``None`` (a module
        that cannot be loaded).
    :param argument: the argument at fault (``path``, ``mode``…), or
        ``None``.
    :param problem: what is wrong.
    """

    def __init__(self, route: str | None, argument: str | None, problem: str) -> None:
        self.route = route
        self.argument = argument
        self.problem = problem
        super().__init__(route, argument, problem)

    def __str__(self) -> str:
        if self.route is None:
            return self.problem
        where = f"long-polling route {self.route!r}"
        if self.argument is not None:
            where += f", argument {self.argument!r}"
        return f"{where}: {self.problem}"


class DuplicateRouteError(UserError, ValueError):
    """Two routes claim the same path.

    Paths that differ only by the names of their placeholders
    (``/x/<a>`` and ``/x/<b>``) are the same path.

    :ivar existing: the route already in the router.
    :ivar duplicate: the route refused.
    """

    def __init__(self, existing: _Routed, duplicate: _Routed) -> None:
        self.existing = existing
        self.duplicate = duplicate
        super().__init__(existing, duplicate)

    def __str__(self) -> str:
        return (
            f"path {self.duplicate.path!r} already routed to {self.existing.endpoint!r}"
        )


class HookError(UserError, ValueError):
    """A hook cannot be registered as asked (e.g. ``on_connect`` with a
    channel, or an invalid regular expression)."""


# -- What a client sent (ClientError) -----------------------------------------


class EventError(ClientError):
    """An event is refused; raise it from a handler to answer an error.

    The client receives :func:`~oe_web_socketio.protocol.error_payload` of
    *code* and *message*, the server logs one line without a traceback: it
    is the client's fault.

    :param code: one of the codes of :mod:`~oe_web_socketio.protocol`, or
        the integrator's own.
    :param message: what the client is told.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class MalformedPacketError(ClientError, ValueError):
    """A Socket.IO packet cannot be decoded and cannot be answered.

    A :class:`ValueError`, as python-socketio's own decoding errors are.

    :ivar close_code: the WebSocket close code of the refusal; by default
        1008, :data:`~oe_web_socketio.protocol.CLOSE_POLICY_VIOLATION`.
    """

    def __init__(self, message: str, close_code: int = 1008) -> None:
        self.close_code = close_code
        super().__init__(message)


class EngineIOPacketError(ClientError, ValueError):
    """An Engine.IO packet or payload from a client is refused.

    :ivar close_code: the WebSocket close code that says why; by default
        1002, :data:`~oe_web_socketio.protocol.CLOSE_PROTOCOL_ERROR`.
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        self.close_code = close_code
        super().__init__(message)


class PayloadError(ClientError, ValueError):
    """The JSON payload of a Socket.IO packet cannot be decoded.

    Raised inside python-socketio's decoding (a :class:`ValueError`, as its
    own are) and turned into a :class:`MalformedPacketError` by
    :mod:`~oe_web_socketio.protocol`.
    """


class HTTPError(ClientError):
    """A request an endpoint refuses; the client is told *status* and
    *reason*.

    Raise it from an endpoint (or from
    :meth:`~oe_web_socketio.routing.Request.body`): the
    :class:`~oe_web_socketio.routing.Router` answers ``{"error": reason}``
    with *status* and logs one line. It is the client's fault, not an
    internal one.

    :param status: a ``4xx`` status.
    :param reason: what the client is told, e.g. ``"body too large"``.
    """

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(status, reason)

    def __str__(self) -> str:
        return f"{self.status.value} {self.reason}"


# -- Faults and signals of the running server ---------------------------------


class HostError(OeWebSocketIOError):
    """The host application failed: its code raised, or answered what the
    server cannot use. Already logged by the host; its message can be
    shown to the client (it names no internals)."""


class GateTimeout(OeWebSocketIOError):
    """No slot of a :class:`~oe_web_socketio.hosts.tryton_orm.FairGate`
    came free in time."""


class QueueFull(OeWebSocketIOError):
    """A packet would take a session's queue past its cap.

    :param queued: bytes queued already.
    :param size: bytes of the packet refused.
    :param limit: the cap.
    """

    def __init__(self, queued: int, size: int, limit: int) -> None:
        self.queued = queued
        self.size = size
        self.limit = limit
        super().__init__(queued, size, limit)

    def __str__(self) -> str:
        return (
            f"{self.queued} bytes queued, a message of {self.size} would pass "
            f"max_queued_bytes ({self.limit})"
        )


class PollTimeout(OeWebSocketIOError, TimeoutError):
    """The time a long-polling handler may wait ran out without news.

    Raised by :meth:`~oe_web_socketio.longpolling.LongPollingRequest.wait`;
    uncaught, the client is answered ``204 No Content`` (and polls again).
    """


class Resync(OeWebSocketIOError):
    """A client's position cannot be resumed from: what it missed is no
    longer all known (or it is not a position of the broker's database).
    Raised by a broker's replay (:mod:`oe_web_socketio.pubsub`), answered
    by :mod:`oe_web_socketio.resume` with ``{"resync": true, …}``.

    :param reason: why, as the client is told (``"past the retention
        window"``…).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return self.reason
