"""A chat with rooms for the users of the ERP: the example namespace.

Served at ``/chat`` by the appliance (entry point group
``oe_web_socketio.namespaces``). A client connects with its Tryton session
(anonymous clients are refused), then, with any Socket.IO client::

    socket.emit("subscribe", "room-sales")         // join a room: ack true
    socket.send("hello", "room-sales")             // say something there
    socket.on("message", (line, channel) => …)     // what is said, joins, leaves
    socket.emit("unsubscribe", "room-sales")       // leave

Every line the room receives is an object with ``type`` (``say``, ``join``
or ``leave``), ``room``, ``login`` and ``uid``, plus ``text`` for ``say``.
The sender receives its own lines too, so every client renders one stream.
"""

from __future__ import annotations

import re
from typing import Any

from oe_web_socketio import EventError, Namespace, events

__all__ = ["ChatNamespace"]

#: A room is a channel named ``room-<name>``.
ROOM = re.compile(r"room-[a-z0-9][a-z0-9_-]{0,39}")
#: Longest line, in characters.
MAX_TEXT = 2000


class ChatNamespace(Namespace):
    """One connected chat user."""

    allow_anonymous = False
    #: The chat's own hooks, apart from the default registry.
    events = events.Events()

    def can_subscribe(self, channel: str) -> bool:
        return bool(ROOM.fullmatch(channel)) or super().can_subscribe(channel)

    def on_message(self, message: Any, channel: Any = None) -> None:
        """A line said in a room goes to everyone in it, the sender too."""
        if not isinstance(channel, str) or not ROOM.fullmatch(channel):
            raise EventError("bad_request", "say it in a room: send(text, 'room-…')")
        if not isinstance(message, str) or not message.strip():
            raise EventError("bad_request", "say something: a non-empty string")
        if len(message) > MAX_TEXT:
            raise EventError("payload_too_large", f"at most {MAX_TEXT} characters")
        # Checks the subscription and runs the on_message hooks.
        super().on_message(message, channel)
        self.send_and_broadcast_channel(
            _line(self, "say", channel, text=message), channel
        )


def _line(socket: ChatNamespace, kind: str, room: str, **extra: Any) -> dict:
    return {
        "type": kind,
        "room": room,
        "login": socket.login,
        "uid": socket.uid,
        **extra,
    }


@ChatNamespace.events.on_subscribe(channel="^room-")
def joined(request, socket, context, channel):
    socket.send_and_broadcast_channel(_line(socket, "join", channel), channel)


@ChatNamespace.events.on_unsubscribe(channel="^room-")
def left(request, socket, context, channel):
    socket.broadcast_channel(_line(socket, "leave", channel), channel)
