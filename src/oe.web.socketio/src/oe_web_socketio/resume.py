"""Resuming: a socket that comes back gets what it missed, then the live
messages, with no gap and no duplicate.

A client keeps the ``position`` of the last database message it received
(the third argument of ``message``). When it connects again, to this
server or another, after a restart or not, it emits ``resume`` with it
(:meth:`Namespace.on_resume <oe_web_socketio.namespace.Namespace.on_resume>`
calls :func:`resume`), and receives every message of its channels (and
the broadcasts of its database) after it, in order, once, then the live
ones.

How, for one socket, under its own lock (two resumes of one socket do
not interleave):

1. the socket leaves its database rooms (it *holds*): what the broker
   delivers from now on does not reach it live, it is read instead;
2. it subscribes to the channels asked for;
3. rounds: read the messages after the position, up to the broker's
   :meth:`~oe_web_socketio.pubsub.Broker.head`, and send them; the read
   yields, so the head may move meanwhile: read again from where the last
   read stopped, at most :data:`ROUNDS` times;
4. when a read ends at the head, with no yield in between, the socket
   enters its rooms again (it *releases*): every message after the head
   will reach it live, every one up to it was read. No gap, no duplicate:
   the broker advances its head only after the messages up to it went
   out, without a yield (see :mod:`oe_web_socketio.pubsub`).

The client is told to resynchronise (reload what it shows, go on from the
head) when its position is not one, is of another database, is ahead of
this server for more than :data:`WAIT` seconds, is no longer kept, or when
messages keep coming faster than it reads them: five reasons, one log
line each. The socket is subscribed and back on the live path in every
case, an exception too.

A broker that does not replay (:data:`~oe_web_socketio.pubsub.NULL`, of
a namespace built without a server) has nothing to replay: the socket
only subscribes, and is answered ``{"position": null, "replayed": 0}``.
The in-process broker of a plain WSGI host replays from its history.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import gevent.lock

from oe_web_socketio.exceptions import DatabaseUnavailable, EventError, Resync
from oe_web_socketio.protocol import BAD_REQUEST, MESSAGE_EVENT
from oe_web_socketio.pubsub import Broker, Subscriber

logger = logging.getLogger(__name__)

#: Seconds a client whose position this server has not delivered yet
#: waits for it (with several servers on one database, the one it left
#: may be a few milliseconds ahead).
WAIT = 2.0

#: Most reads of a resuming client before it is put back on the live path
#: (each one reads what arrived during the previous one).
ROUNDS = 20


class Resuming(Subscriber, Protocol):
    """What :func:`resume` needs of a socket
    (:class:`~oe_web_socketio.namespace.Namespace` has it): where it is,
    what it listens to, and these."""

    def resume_lock(self) -> gevent.lock.BoundedSemaphore:
        """The lock of this socket's resumes."""

    def hold(self) -> None:
        """Leave the database rooms until :meth:`release` (never yields)."""

    def release(self) -> None:
        """Be back in the database rooms (never yields)."""

    def on_subscribe(self, channel: Any) -> bool:
        """Subscribe, as the client's ``subscribe`` would."""

    def emit(self, event: str, *args: Any) -> None:
        """Send *event* to this socket."""


def resume(
    socket: Resuming,
    broker: Broker,
    token: Any = None,
    channels: Any = None,
    *,
    wait: float = WAIT,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """Subscribe *socket* to *channels*, send it what it missed since
    *token* (``None``: from now on), then put it back on the live path.

    :returns: ``{"position": …, "replayed": n}``, or, when the client must
        reload what it shows, ``{"resync": True, "reason": …,
        "position": …}``, where ``position`` is where it stands now.
    :raises EventError: *channels* is not a list, or a channel is refused.
    :raises DatabaseUnavailable: the broker is not connected to the
        socket's database yet, or cannot read it.
    """
    if channels is None:
        channels = []
    if not isinstance(channels, list):
        raise EventError(BAD_REQUEST, "channels must be a list of channels")
    with socket.resume_lock():
        # Off the live path first: what is delivered from now on is read
        # from the broker, up to the moment the socket is back.
        socket.hold()
        try:
            for channel in channels:
                socket.on_subscribe(channel)
            if not broker.replays:
                return {"position": None, "replayed": 0}
            return _replay(socket, broker, token, wait, rounds)
        finally:
            socket.release()


def _replay(
    socket: Resuming, broker: Broker, token: Any, wait: float, rounds: int
) -> dict[str, Any]:
    database = socket.database
    if database is None:
        raise DatabaseUnavailable("-", "the database bridge is not connected")
    head = broker.head(database)
    if token is None:
        socket.release()
        return {"position": broker.token(database, head), "replayed": 0}
    try:
        after = broker.locate(database, token)
        if after > head and not broker.wait_until(database, after, wait):
            raise Resync("a position from the future")
        replayed = 0
        for _ in range(rounds):
            until = broker.head(database)
            if until > after:
                messages = broker.replay(
                    database,
                    after,
                    until,
                    namespace=socket.path,
                    channels=sorted(socket.channels),
                )
                for message in messages:
                    socket.emit(
                        MESSAGE_EVENT, message.payload, message.channel, message.token
                    )
                replayed += len(messages)
                after = until
            # From the head read to the release, nothing yields.
            if broker.head(database) == until:
                socket.release()
                return {"position": broker.token(database, until), "replayed": replayed}
        raise Resync("too far behind")
    except Resync as exc:
        socket.release()
        logger.warning("%r must resynchronise: %s (%.80r)", socket, exc.reason, token)
        return {
            "resync": True,
            "reason": exc.reason,
            "position": broker.token(database, broker.head(database)),
        }
