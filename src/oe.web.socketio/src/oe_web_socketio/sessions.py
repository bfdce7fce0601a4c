"""Sessions that end while their sockets are connected.

A socket is authenticated once, at connection (or by its ``session_id``
event). The session can end afterwards: the user logs out (trytond deletes
the ``ir_session`` row), it expires (``[session] max_age``), an
administrator deactivates the user, or a plain WSGI host's callable stops
accepting the token. :class:`SessionWatch` checks every authenticated
socket again every ``session_check_interval`` seconds, with the very
credentials it presented (:meth:`~oe_web_socketio.namespace.Namespace.recheck`),
and ends the sockets whose session is over: the client gets the ``error``
event ``{"error": {"code": "authentication_failed", "message": "invalid or
expired session"}}``, then is disconnected by the server (Socket.IO clients
do not reconnect by themselves after that), and one line is logged.

Invariants: a check that cannot be made (database out of reach, the host
application failing) never disconnects anyone; the watch never dies of a
socket's failure. Cost: one read-only query per authenticated socket per
interval, one socket at a time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import gevent

from oe_web_socketio.protocol import AUTHENTICATION_FAILED

if TYPE_CHECKING:
    from oe_web_socketio.directory import SocketDirectory
    from oe_web_socketio.namespace import Namespace

logger = logging.getLogger(__name__)

#: What a client whose session ended is told.
SESSION_ENDED = "invalid or expired session"


class SessionWatch:
    """Checks the sessions of connected sockets every *interval* seconds.

    :param directory: the connected sockets.
    :param interval: seconds between two rounds (after the end of one).
    """

    def __init__(self, directory: SocketDirectory, interval: float) -> None:
        self.directory = directory
        self.interval = interval
        #: Sockets ended because their session had ended, since the start.
        self.ended = 0
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def stats(self) -> dict[str, float | int]:
        """For ``/health``."""
        return {"interval": self.interval, "ended": self.ended}

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.check_all()
            except Exception:  # logged; the next round comes
                logger.exception("The check of connected sessions failed")

    def check_all(self) -> int:
        """Check every authenticated socket once; return how many ended."""
        ended = 0
        for socket in self.directory.sockets():
            if socket.identity is None or not socket.connected:
                continue
            try:
                if socket.recheck() is False and socket.connected:
                    self.end(socket)
                    ended += 1
            except Exception:  # logged; the others go on
                logger.exception("Cannot check the session of %r", socket)
            # Let the other greenlets run between two queries.
            gevent.sleep(0)
        return ended

    def end(self, socket: Namespace) -> None:
        """Tell *socket* its session ended, and disconnect it."""
        logger.info("Session of %r ended: disconnecting it", socket)
        self.ended += 1
        socket.error(AUTHENTICATION_FAILED, SESSION_ENDED)
        socket.disconnect()
