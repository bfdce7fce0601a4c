"""Rooms: the only place python-socketio room names are made.

A socket is in python-socketio rooms of its namespace (its path):

* the room of each channel it subscribed to, named as the channel
  (:func:`subscribers`): what :meth:`Namespace.broadcast_channel
  <oe_web_socketio.namespace.Namespace.broadcast_channel>` and
  :func:`oe_web_socketio.wsgi.broadcast_channel` emit to, live, in this
  process;
* the room of its database (:func:`database_room`) and, per channel, the
  room of that channel in its database (:func:`channel_room`): what the
  messages published in the database reach (see
  :mod:`oe_web_socketio.bridge`).

A socket's membership is two sets it keeps (its channels, its database
rooms); :func:`join`, :func:`leave` and :func:`move` change it. They are
functions, not an object per socket: an idle socket costs memory
(README "Benchmarks").

Invariants:

* no client can name a database room: their names start with a NUL
  character, which :meth:`Namespace.can_subscribe
  <oe_web_socketio.namespace.Namespace.can_subscribe>` refuses in a
  channel; so the messages of one database never reach the sockets of
  another;
* the rooms of a socket change without a yield (the resume invariant
  counts on it, see :mod:`oe_web_socketio.resume`);
* a socket in no room holds no container of its own: the empty sets are
  :data:`NO_NAMES`, shared.
"""

from __future__ import annotations

from typing import Any, Protocol

#: The empty set of channels or rooms, shared: ``frozenset()`` builds a
#: new 216-byte object each time, and most sockets are in no channel.
NO_NAMES: frozenset[str] = frozenset()


class RoomServer(Protocol):
    """What rooms need of python-socketio's server."""

    def enter_room(self, sid: str, room: str, namespace: str | None = None) -> Any:
        """Put *sid* in *room* (:class:`ValueError`: the private room of
        another socket)."""

    def leave_room(self, sid: str, room: str, namespace: str | None = None) -> Any:
        """Take *sid* out of *room*."""


def subscribers(channel: str) -> str:
    """The room of the sockets of a namespace subscribed to *channel*,
    for the emits of this process."""
    return channel


def database_room(database: str) -> str:
    """The room of every socket of *database*."""
    return f"\0{database}"


def channel_room(database: str, channel: str) -> str:
    """The room of the sockets of *database* subscribed to *channel*."""
    return f"\0{database}\0{channel}"


def database_rooms(database: str | None, channels: frozenset[str]) -> frozenset[str]:
    """The database rooms of a socket of *database* (``None``: no database,
    no rooms) subscribed to *channels*."""
    if database is None:
        return NO_NAMES
    return frozenset(
        {database_room(database)}
        | {channel_room(database, channel) for channel in channels}
    )


def join(server: RoomServer, sid: str, path: str | None, channel: str) -> None:
    """Put the socket *sid* of the namespace *path* in the room of *channel*.

    :raises ValueError: *channel* is the id of another socket.
    """
    server.enter_room(sid, subscribers(channel), namespace=path)


def leave(server: RoomServer, sid: str, path: str | None, channel: str) -> None:
    """Take the socket *sid* of the namespace *path* out of the room of
    *channel*."""
    server.leave_room(sid, subscribers(channel), namespace=path)


def move(
    server: RoomServer,
    sid: str,
    path: str | None,
    have: frozenset[str],
    wanted: frozenset[str],
) -> frozenset[str]:
    """Take the socket *sid* of the namespace *path* out of the rooms of
    *have* not in *wanted*, put it in the others of *wanted*; return
    *wanted*. Never yields."""
    for room in have - wanted:
        server.leave_room(sid, room, namespace=path)
    for room in wanted - have:
        server.enter_room(sid, room, namespace=path)
    return wanted
