"""Exceptions of :mod:`oe_web_socketio`.

Every exception raised on purpose by this package derives from
:class:`OeWebSocketIOError`, so a caller can tell our errors apart from
bugs. The subclasses here describe faults of the user or of the
environment (a bad configuration file, a port already taken); they carry
their context as attributes and their message is meant to be shown as is.
"""

from __future__ import annotations


class OeWebSocketIOError(Exception):
    """Root of the exceptions raised by :mod:`oe_web_socketio`."""


class ConfigError(OeWebSocketIOError):
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


class ListenError(OeWebSocketIOError):
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


class AuthenticationError(OeWebSocketIOError):
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
