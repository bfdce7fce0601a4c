"""The chat namespace and its users: shared by the plain WSGI, web.py and
Flask examples.

A client connects to ``/chat`` with a token, in the Socket.IO ``auth``
payload (``{"session": token}``, which the browser client sends as
``new SocketIO("/chat", {session: token})``) or an ``Authorization: Bearer
<token>`` header, then::

    socket.emit("subscribe", "room-lobby")         // join a room: ack true
    socket.send("hello", "room-lobby")             // say something there
    socket.on("message", (line, channel) => …)     // lines, joins, leaves, announces
    socket.emit("whoami", (me) => …)               // {login, uid, rooms}

Every line is an object with ``type`` (``say``, ``join``, ``leave``, or
``announce`` for what an ordinary view broadcasts), ``room``, ``login``,
plus ``text``. The user ``guest`` may listen but not talk: its ACL lacks
``message``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from oe_web_socketio import EventError, Namespace, events
from oe_web_socketio.exceptions import AuthenticationError

__all__ = ["ROOM", "USERS", "Chat", "announcement", "authenticate", "line", "token_of"]

#: The users, by token. A real application asks its user store.
USERS: dict[str, dict[str, Any]] = {
    "alice-token": {"login": "alice", "uid": 1},
    "bob-token": {"login": "bob", "uid": 2},
    "carol-token": {"login": "carol", "uid": 3},
    "guest-token": {"login": "guest", "uid": 4},
}

#: A room is a channel named ``room-<name>``.
ROOM = re.compile(r"room-[a-z0-9][a-z0-9_-]{0,39}")

#: Longest line, in characters.
MAX_TEXT = 2000

#: The events a listener-only user may emit.
LISTENER_ACL = frozenset({"subscribe", "unsubscribe", "whoami", "resume"})


def token_of(environ: Mapping[str, Any], auth: Any) -> str | None:
    """The token a client presents: ``auth["session"]``, else the
    ``Authorization: Bearer`` header; ``None`` without one."""
    if isinstance(auth, Mapping) and auth.get("session") is not None:
        token = auth["session"]
        if not isinstance(token, str):
            raise AuthenticationError("the session must be a string token")
        return token
    scheme, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(environ: Mapping[str, Any], auth: Any) -> dict[str, Any] | None:
    """The user of the token presented, ``None`` without a token.

    :raises AuthenticationError: the token is unknown.
    """
    token = token_of(environ, auth)
    if token is None:
        return None
    user = USERS.get(token)
    if user is None:
        raise AuthenticationError("unknown token")
    return user


class Chat(Namespace):
    """One connected chat user."""

    allow_anonymous = False
    #: The chat's own hooks, apart from the default registry.
    events = events.Events()

    def get_authenticated_acl(self) -> set[str] | None:
        if self.login == "guest":
            return set(LISTENER_ACL)
        return None

    def can_subscribe(self, channel: str) -> bool:
        return bool(ROOM.fullmatch(channel)) or super().can_subscribe(channel)

    def on_whoami(self) -> dict[str, Any]:
        """The acknowledgement: who this socket is, in which rooms."""
        return {"login": self.login, "uid": self.uid, "rooms": sorted(self.channels)}

    def on_message(self, message: Any, channel: Any = None) -> None:
        """A line said in a room goes to everyone in it, the sender too."""
        if not isinstance(channel, str) or not ROOM.fullmatch(channel):
            raise EventError("bad_request", "say it in a room: send(text, 'room-…')")
        if not isinstance(message, str) or not message.strip():
            raise EventError("bad_request", "say something: a non-empty string")
        if len(message) > MAX_TEXT:
            raise EventError("payload_too_large", f"at most {MAX_TEXT} characters")
        super().on_message(message, channel)  # checks the subscription
        self.send_and_broadcast_channel(
            line("say", channel, self.login, text=message), channel
        )


def line(kind: str, room: str, login: str | None, **extra: Any) -> dict[str, Any]:
    """A line of a room."""
    return {"type": kind, "room": room, "login": login, **extra}


def announcement(fields: Any) -> dict[str, Any]:
    """The line an ordinary view broadcasts: *fields* (a request's body, a
    mapping) name the ``room`` and the ``text``.

    :raises ValueError: no room, or a text empty or too long.
    """
    room = fields.get("room") if isinstance(fields, Mapping) else None
    text = fields.get("text") if isinstance(fields, Mapping) else None
    if not isinstance(room, str) or not ROOM.fullmatch(room):
        raise ValueError("room must be a room: room-<name>")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise ValueError(f"text must be 1 to {MAX_TEXT} characters")
    return line("announce", room, None, text=text)


@Chat.events.on_subscribe(channel="^room-")
def joined(request, socket, context, channel):
    socket.send_and_broadcast_channel(line("join", channel, socket.login), channel)


@Chat.events.on_unsubscribe(channel="^room-")
def left(request, socket, context, channel):
    socket.broadcast_channel(line("leave", channel, socket.login), channel)
