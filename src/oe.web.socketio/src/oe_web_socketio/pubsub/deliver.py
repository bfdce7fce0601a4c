"""Fan-out: a message a broker delivers, to the sockets of this process
it is for.

A :class:`Deliverer` emits one message (with its position) to:

* with a socket id: that socket, if it is of the message's database;
* with a channel: the room of that channel in the database
  (:func:`~oe_web_socketio.rooms.channel_room`), one emit per namespace
  (python-socketio encodes the packet once), the adapter queues of that
  channel (:mod:`oe_web_socketio.adapter`) and the long polls waiting on
  it;
* otherwise: the room of the database (:func:`~oe_web_socketio.rooms.database_room`),

in the namespace the message names, or in every one.

Invariants:

* :meth:`Deliverer.deliver` never yields: a broker delivers a batch and
  advances its head in one go, which the resume relies on (see
  :mod:`oe_web_socketio.resume`);
* it emits to this process's sockets only (``ignore_queue``), never
  through the client manager that carries emits to the other workers
  (:mod:`oe_web_socketio.pubsub.fanout`): every worker reads the outbox
  itself, so a message published through the manager would reach each
  socket once per worker;
* the sockets are found in the :class:`~oe_web_socketio.directory.SocketDirectory`,
  whose namespace paths are read once per batch.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gevent.event

from oe_web_socketio.adapter import Message
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.protocol import MESSAGE_EVENT
from oe_web_socketio.rooms import channel_room, database_room

if TYPE_CHECKING:
    import socketio

    from oe_web_socketio.pubsub import Listening


class Deliverer:
    """Emit the messages of databases to this process's sockets.

    :param server: the python-socketio server.
    :param directory: where the connected sockets are.
    """

    def __init__(self, server: socketio.Server, directory: SocketDirectory) -> None:
        self.server = server
        self.directory = directory
        #: The sockets with an adapter, by database and channel.
        self._adapters: dict[tuple[str, str], set[Listening]] = defaultdict(set)
        #: Who waits for the next message, by database and channel.
        self._waiters: dict[tuple[str, str], set[gevent.event.AsyncResult]] = (
            defaultdict(set)
        )

    def deliver(
        self,
        database: str,
        position: int,
        token: str,
        payload: Any,
        *,
        channel: str | None,
        namespace: str | None,
        sid: str | None,
        paths: list[str],
    ) -> None:
        """Emit one message to the sockets of the namespace *paths* (those
        of :meth:`SocketDirectory.paths
        <oe_web_socketio.directory.SocketDirectory.paths>`, read once for
        a batch). Never yields."""
        if namespace is not None:
            paths = [namespace] if namespace in paths else []
        for path in paths:
            if sid is not None:
                socket = self.directory.find(path, sid)
                if socket is not None and socket.database == database:
                    self.server.emit(
                        MESSAGE_EVENT,
                        (payload, None, token),
                        to=sid,
                        namespace=path,
                        ignore_queue=True,
                    )
            elif channel is not None:
                self.server.emit(
                    MESSAGE_EVENT,
                    (payload, channel, token),
                    to=channel_room(database, channel),
                    namespace=path,
                    ignore_queue=True,
                )
            else:
                self.server.emit(
                    MESSAGE_EVENT,
                    (payload, None, token),
                    to=database_room(database),
                    namespace=path,
                    ignore_queue=True,
                )
        if channel is not None and sid is None:
            listeners = self._adapters.get((database, channel))
            waiters = self._waiters.pop((database, channel), None)
            if listeners or waiters:
                message = Message(database, position, token, channel, payload)
                for socket in list(listeners or ()):
                    if namespace is None or namespace == socket.path:
                        socket.adapter_queue.offer(message)
                for waiter in waiters or ():
                    waiter.set([message])

    # --- adapters

    def attach(self, socket: Listening) -> None:
        """Deliver the messages of its adapter's channel to *socket*."""
        if socket.adapter is not None and socket.database is not None:
            self._adapters[socket.database, socket.adapter.channel].add(socket)

    def detach(self, socket: Listening) -> None:
        """Stop delivering adapter messages to *socket*."""
        for key, sockets in list(self._adapters.items()):
            sockets.discard(socket)
            if not sockets:
                del self._adapters[key]

    # --- long polls

    @contextlib.contextmanager
    def waiting(
        self, database: str, channel: str
    ) -> Iterator[gevent.event.AsyncResult]:
        """For the ``with`` block, a result set to ``[message]`` by the next
        message delivered on *channel* of *database*."""
        key = (database, channel)
        waiter: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._waiters[key].add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]
