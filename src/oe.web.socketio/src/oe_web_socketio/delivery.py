"""Delivery to a socket: the database's messages, its resume, its adapter.

The part of :class:`~oe_web_socketio.namespace.Namespace` that puts a
socket where its broker's messages reach it (:mod:`oe_web_socketio.pubsub`):
the rooms of its database and of its channels there, its adapter's queue;
and that publishes through the broker and resumes
(:mod:`oe_web_socketio.resume`).

Invariants:

* a connected socket of a database is in the rooms of its database and of
  its channels there (:mod:`oe_web_socketio.rooms`), except while it
  resumes (:meth:`Delivery.hold`); moving it never yields;
* a socket with no adapter and no resume holds no queue and no lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import gevent.event
import gevent.lock

from oe_web_socketio import pubsub, resume, rooms
from oe_web_socketio.adapter import Adapter, AdapterQueue
from oe_web_socketio.exceptions import EventError
from oe_web_socketio.logs import shorten
from oe_web_socketio.protocol import FORBIDDEN

if TYPE_CHECKING:
    from collections.abc import Callable

    import socketio

    from oe_web_socketio.pubsub import Broker


class Delivery:
    """The database's messages to a socket (a part of
    :class:`~oe_web_socketio.namespace.Namespace`)."""

    server: socketio.Server
    sid: str
    path: str | None
    connected: bool
    broker: Broker
    adapter: Adapter | None
    adapter_class: ClassVar[type[Adapter] | None]
    ack_timeout: ClassVar[float]
    _channels: frozenset[str]
    _rooms: frozenset[str]
    _holding: bool
    _resume_lock: gevent.lock.BoundedSemaphore | None
    _adapter_queue: AdapterQueue | None

    if TYPE_CHECKING:

        @property
        def database(self) -> str | None: ...

        @property
        def channels(self) -> frozenset[str]: ...

        def on_subscribe(self, channel: Any) -> bool: ...

        def emit(
            self, event: str, *args: Any, callback: Callable[..., Any] | None = None
        ) -> None: ...

    def attach(self) -> None:
        """Join the rooms of this socket's database and start receiving
        its adapter's messages (called once the socket is connected)."""
        self._sync_rooms()
        self.broker.attach(self)

    def detach(self) -> None:
        """Stop the adapter's messages and, once the socket is
        disconnecting, leave the database's rooms."""
        self.broker.detach(self)
        self._sync_rooms()

    def _sync_rooms(self) -> None:
        """Be in the rooms of the database and channels, no others.

        Never yields (see :mod:`oe_web_socketio.resume`)."""
        live = self.connected and not self._holding
        wanted = rooms.database_rooms(self.database if live else None, self._channels)
        self._rooms = rooms.move(self.server, self.sid, self.path, self._rooms, wanted)

    def hold(self) -> None:
        """Leave the rooms of the database until :meth:`release`, while the
        socket resumes (never yields)."""
        self._holding = True
        self._sync_rooms()

    def release(self) -> None:
        """Be back in the rooms of the database (never yields)."""
        if self._holding:
            self._holding = False
            self._sync_rooms()

    def resume_lock(self) -> gevent.lock.BoundedSemaphore:
        """The lock that serializes the resumes of this socket (created by
        the first one)."""
        if self._resume_lock is None:
            self._resume_lock = gevent.lock.BoundedSemaphore()
        return self._resume_lock

    def on_resume(self, position: Any = None, channels: Any = None) -> dict[str, Any]:
        """The ``resume`` event: subscribe to *channels* and receive every
        database message of this socket's channels (and broadcasts) after
        *position*, in order, before any newer one (see
        :mod:`oe_web_socketio.resume`).

        :param position: the last ``position`` the client received (the
            third argument of ``message``), or ``None`` for "from now on".
        :param channels: channels to subscribe to first, as ``subscribe``
            would (a list of names).
        :returns: ``{"position": p, "replayed": n}``: *n* messages were
            sent; or ``{"resync": true, "reason": …, "position": p}``: the
            messages since *position* are no longer all known (or it is
            not a position of this database), reload and go on from *p*.
            The socket is subscribed in every case. A server without a
            database bridge (a plain WSGI host) only subscribes, and
            answers ``{"position": null, "replayed": 0}``: its messages
            are live only.
        """
        return resume.resume(self, self.broker, position, channels)

    def publish(
        self,
        message: Any,
        channel: str | None = None,
        *,
        namespace: str | None = None,
    ) -> None:
        """Publish *message* through the database of this socket, to every
        server: on *channel* (every socket of *namespace* without one). It
        is delivered like a message published by the ERP, with a position.

        :raises EventError: the server has no database bridge.
        :raises DatabaseUnavailable: the database cannot be written to.
        """
        address = pubsub.Address(self.database or "", namespace, channel)
        self.broker.publish(address, message)

    def recent(self, channel: str, limit: int = 50) -> list[pubsub.Replayed]:
        """The last *limit* messages published through the database on
        *channel*, which this socket is subscribed to, for its namespace,
        oldest first (``position``, ``token``, ``channel``, ``payload``):
        the history a socket that just joined a channel shows. Messages
        arriving meanwhile may be among them: their tokens tell.

        :raises EventError: ``forbidden``, the socket is not subscribed to
            *channel*.
        :raises DatabaseUnavailable: the history cannot be read now, or
            the server has none (a namespace built by hand).
        """
        if channel not in self.channels:
            raise EventError(FORBIDDEN, f"not subscribed to {shorten(channel)}")
        return self.broker.recent(
            self.database or "", channel, limit, namespace=self.path
        )

    # adapters

    @property
    def adapter_queue(self) -> AdapterQueue:
        """The database messages of the adapter's channel waiting for
        this socket (created when first used: most sockets have none)."""
        if self._adapter_queue is None:
            self._adapter_queue = AdapterQueue()
        return self._adapter_queue

    def _require_adapter(self) -> Adapter:
        if self.adapter is None:
            raise TypeError(f"{type(self).__name__} has no adapter_class")
        return self.adapter

    def listen(self, *args: Any, timeout: float | None = None) -> Any:
        """Wait for database messages of the adapter's channel that
        :meth:`Adapter.get(messages, *args) <oe_web_socketio.adapter.Adapter.get>`
        chooses for this socket; return them through
        :meth:`~oe_web_socketio.adapter.Adapter.format`.

        The messages returned last are returned again until
        :meth:`validate` (or an acknowledged :meth:`secure_emit`) marks
        them delivered.

        :param timeout: seconds to wait; ``None``: until there are some.
        :returns: the formatted messages; on timeout, those of no message.
        :raises TypeError: the namespace has no :attr:`adapter_class`.
        """
        adapter = self._require_adapter()
        messages = self.adapter_queue.take(adapter, args, timeout)
        return adapter.format(messages)

    def validate(self, delivered: bool = True) -> None:
        """Mark the messages :meth:`listen` returned last as delivered, or
        with ``False`` as to be offered again."""
        if self._adapter_queue is not None:  # else nothing was offered
            self._adapter_queue.validate(delivered)

    def secure_emit(self, event: str, data: Any, timeout: float | None = None) -> bool:
        """Emit *event* with *data* and wait for the client's
        acknowledgement; it validates the messages :meth:`listen` returned
        last. Without it within *timeout* seconds (default
        :attr:`ack_timeout`), or acknowledged with ``false`` as its first
        argument (the client could not take them), they are offered again
        by the next :meth:`listen`.

        :returns: whether the client acknowledged.
        """
        answer: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.emit(
            event,
            data,
            callback=lambda *args: answer.set(not args or args[0] is not False),
        )
        ok = bool(answer.wait(self.ack_timeout if timeout is None else timeout))
        self.validate(ok)
        return ok

    def notify(self, message: Any, channel: str | None = None) -> None:
        """Publish *message* on the adapter's channel (or *channel*)
        through the database: every socket listening there, on every
        server, receives it (see :meth:`publish`)."""
        if channel is None:
            channel = self._require_adapter().channel
        self.publish(message, channel)
