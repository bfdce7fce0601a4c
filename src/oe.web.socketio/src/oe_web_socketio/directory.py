"""Where the connected sockets of this server are: by namespace path,
then by socket id.

The dispatchers (:class:`~oe_web_socketio.dispatcher.Dispatcher`, one per
path) keep the sockets. :class:`~oe_web_socketio.sockets.SocketIO` adds
each dispatcher it registers to the directory, and what delivers messages
or watches sessions finds them here instead of reaching into the
dispatchers. The directory exists before the namespaces are registered
(their broker needs it): it is built empty and filled by their
registration, its one writer.

Invariants:

* reading the directory never yields;
* a path is served by one dispatcher, for the life of the server;
* :meth:`SocketDirectory.paths` and :meth:`SocketDirectory.sockets` are
  snapshots: a namespace registered or a socket connected after them is
  not in them (a broker takes the paths once per batch of messages).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class SocketDirectory:
    """The connected sockets of the server, by namespace path (empty until
    :meth:`add` is called)."""

    __slots__ = ("_dispatchers",)

    def __init__(self) -> None:
        self._dispatchers: dict[str, Any] = {}

    def add(self, path: str, dispatcher: Any) -> None:
        """Find the sockets of *path* in *dispatcher*'s ``sockets`` (its
        connected sockets, by id).

        :raises KeyError: *path* has a dispatcher already.
        """
        if path in self._dispatchers:
            raise KeyError(f"{path!r} has a dispatcher already")
        self._dispatchers[path] = dispatcher

    @property
    def dispatchers(self) -> Mapping[str, Any]:
        """The dispatcher of each path (a read-only view)."""
        return MappingProxyType(self._dispatchers)

    def paths(self) -> list[str]:
        """The namespace paths served, now."""
        return list(self._dispatchers)

    def find(self, path: str, sid: str) -> Any | None:
        """The socket *sid* of the namespace *path*, or ``None``."""
        dispatcher = self._dispatchers.get(path)
        return None if dispatcher is None else dispatcher.sockets.get(sid)

    def sockets(self) -> list[Any]:
        """Every connected socket of every path, now."""
        return [
            socket
            for dispatcher in list(self._dispatchers.values())
            for socket in list(dispatcher.sockets.values())
        ]
