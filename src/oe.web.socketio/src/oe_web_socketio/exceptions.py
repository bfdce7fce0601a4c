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
