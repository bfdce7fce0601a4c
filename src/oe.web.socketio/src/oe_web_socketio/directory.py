"""Where the connected sockets of this server are: by namespace path,
then by socket id.

The dispatchers (:class:`~oe_web_socketio.dispatcher.Dispatcher`, one per
path, see :class:`~oe_web_socketio.sockets.SocketIO`) keep the sockets;
what delivers messages finds them here instead of reaching into the
dispatchers. The directory is built before the namespaces are registered
(their broker needs it), so it reads the dispatchers when asked.

Invariants:

* reading the directory never yields;
* :meth:`SocketDirectory.paths` is a snapshot: a namespace registered
  after it is not in it (a broker takes one per batch of messages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class SocketDirectory:
    """The connected sockets of the server.

    :param dispatchers: the dispatcher of each namespace path, whose
        ``sockets`` are its connected sockets by id.
    """

    __slots__ = ("_dispatchers",)

    def __init__(self, dispatchers: Callable[[], Mapping[str, Any]]) -> None:
        self._dispatchers = dispatchers

    def paths(self) -> list[str]:
        """The namespace paths served, now."""
        return list(self._dispatchers())

    def find(self, path: str, sid: str) -> Any | None:
        """The socket *sid* of the namespace *path*, or ``None``."""
        dispatcher = self._dispatchers().get(path)
        return None if dispatcher is None else dispatcher.sockets.get(sid)
