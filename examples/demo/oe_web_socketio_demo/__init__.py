"""The demo: who is online, chat rooms, and a live list of parties.

Served at ``/demo`` by the appliance (entry point group
``oe_web_socketio.namespaces``); the page that uses it is ``static/``,
served by nginx at ``/demo/``. Only users of the ERP may connect (their
Tryton session, as for any namespace). What a client may do::

    socket.emit("who", ack)                    // [{uid, login, name}, …]
    socket.emit("subscribe", "demo.room.sales", ack)   // join a room
    socket.emit("say", "sales", "hello", ack)  // {"ok": true}
    socket.emit("history", "sales", ack)       // {"lines": [{line, position}, …]}
    socket.emit("subscribe", "demo.parties", ack)      // live party changes
    socket.emit("parties", ack)                // {"parties": [...], "total"}

and what it receives:

* ``online`` ``([{uid, login, name}, …])``: everyone connected to this
  database, sent to every socket of the database each time someone comes
  or goes (a user with several tabs is one entry);
* ``message`` ``(line, "demo.room.<room>", position)``: a chat line
  ``{"type": "say", "room", "uid", "login", "name", "text", "at"}``;
* ``message`` ``(change, "demo.parties", position)``: what the Tryton
  module ``web_socketio_demo`` publishes when a party changes (see its
  ``party.py``).

Chat lines and party changes go through the database (the outbox), so
they have positions: a client that reconnects resumes from its last one
and misses nothing, sees nothing twice.

Caveats:

* who is online is the server's presence (``track_presence``): the
  sockets of every oe_web_socketio worker sharing the database; the
  ``online`` list is sent again to every tab, on every worker, when
  someone comes or goes;
* the party list is read with plain SQL on the read-only cursor pool
  (a namespace has no trytond ORM), checking the model access rights of
  ``party.party`` for the user's groups as ``ir.model.access`` does;
  record rules (``ir.rule``) are not applied, and the party module
  defines none.
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any

from oe_web_socketio import EventError, Namespace, events
from oe_web_socketio.exceptions import DatabaseUnavailable
from oe_web_socketio.protocol import (
    BAD_REQUEST,
    FORBIDDEN,
    PAYLOAD_TOO_LARGE,
    UNAVAILABLE,
)

__all__ = ["DemoNamespace"]

logger = logging.getLogger(__name__)

#: A chat room is the channel ``demo.room.<name>``.
ROOM_PREFIX = "demo.room."
#: What a room's name may be.
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: The channel of party changes (the Tryton module's ``party.CHANNEL``).
PARTIES = "demo.parties"
#: Longest chat line, in characters.
MAX_TEXT = 500
#: Most chat lines of a room the ``history`` event answers.
HISTORY = 50
#: Most parties the ``parties`` event answers (by name).
MAX_PARTIES = 200

#: The user's groups, with their ancestors, as trytond's
#: ``res.user-res.group`` ``user_group_all_table`` computes them.
USER_GROUPS = """
WITH RECURSIVE parents(id, parent) AS (
    SELECT id, parent FROM res_group
    UNION SELECT id, id FROM res_group
    UNION SELECT g.id, p.parent FROM res_group AS g
        JOIN parents AS p ON g.parent = p.id
)
SELECT p.parent FROM "res_user-res_group" AS ug
    JOIN parents AS p ON ug."group" = p.id
    JOIN res_group AS g ON g.id = p.parent
    WHERE ug."user" = %(uid)s AND g.active
"""
#: Whether the user may read parties: ``ir.model.access`` rows of the
#: model for no group or one of the user's; none means yes.
MAY_READ = f"""
SELECT COALESCE(BOOL_OR(perm_read), TRUE) FROM ir_model_access
WHERE model = 'party.party' AND active
    AND ("group" IS NULL OR "group" IN ({USER_GROUPS}))
"""
READ_PARTIES = """
SELECT id, name, code, active FROM party_party
WHERE active ORDER BY name, id LIMIT %(limit)s
"""
COUNT_PARTIES = "SELECT count(*) FROM party_party WHERE active"
HAS_PARTIES = "SELECT to_regclass('public.party_party') IS NOT NULL"
USER_NAME = "SELECT name FROM res_user WHERE id = %(uid)s"
USER_NAMES = "SELECT id, name FROM res_user WHERE id = ANY(%(uids)s)"


def room_channel(room: Any) -> str:
    """The channel of the room named *room*.

    :raises EventError: not a room name.
    """
    if not isinstance(room, str) or not ROOM_NAME.fullmatch(room):
        raise EventError(
            BAD_REQUEST,
            "a room name is 1 to 32 characters among a-z, 0-9, _ and -, "
            "starting with a letter or digit",
        )
    return ROOM_PREFIX + room


def online_users(logins: dict[Any, Any], names: dict[Any, str]) -> list[dict[str, Any]]:
    """The users of *logins* (by uid; a user with several tabs is one),
    named by *names* (by uid; the login where none), by name."""
    users = [
        {"uid": uid, "login": login, "name": names.get(uid) or login or ""}
        for uid, login in logins.items()
    ]
    return sorted(users, key=lambda u: (u["name"].lower(), u["uid"]))


class DemoNamespace(Namespace):
    """One browser tab of the demo."""

    allow_anonymous = False
    #: The demo's own hooks, apart from the default registry.
    events = events.Events()
    #: Who is online comes from the server's presence, across every
    #: oe_web_socketio worker (Namespace.presence).
    track_presence = True

    # --- presence

    def on_connect(self) -> None:
        assert self.db is not None and self.uid is not None
        self.context["user"] = {
            "uid": self.uid,
            "login": self.login,
            "name": self._user_name(),
        }
        self.server.enter_room(self.sid, self._online_room, namespace=self.path)

    def enter_presence(self) -> None:
        # Recorded (once connected): everyone, this socket too, gets the
        # list (a new tab needs it).
        super().enter_presence()
        logger.info("%s is online in %s", self.login, self.db)
        self._announce()

    def leave_presence(self) -> None:
        super().leave_presence()
        if self.db is not None:
            # Not to the leaving socket: the server may be shutting down,
            # and its page would show nobody online.
            self._announce(skip_sid=self.sid)

    def on_who(self) -> list[dict[str, Any]]:
        """The ``who`` event: the users online in this database."""
        return self._online()

    @property
    def _online_room(self) -> str:
        # Not a channel: can_subscribe never lets a client in.
        return f"demo-online:{self.db}"

    def _online(self) -> list[dict[str, Any]]:
        """The users online in this database, on every worker, by name
        (a user with several tabs once)."""
        uids = {p["uid"]: p["login"] for p in self.presence() if p["uid"] is not None}
        names: dict[Any, str] = {}
        if uids and self.has_database:
            try:
                with self.cursor() as cursor:
                    names = dict(
                        cursor.execute(USER_NAMES, {"uids": list(uids)}).fetchall()
                    )
            except DatabaseUnavailable as exc:
                logger.warning("No names for who is online: %s", exc)
        return online_users(uids, names)

    def _announce(self, skip_sid: str | None = None) -> None:
        try:
            online = self._online()
        except DatabaseUnavailable as exc:
            logger.warning("Cannot tell who is online: %s", exc)
            return
        # Through the broker: the sockets of every worker.
        self.server.emit(
            "online",
            (online,),
            to=self._online_room,
            namespace=self.path,
            skip_sid=skip_sid,
        )

    def _user_name(self) -> str:
        """The user's name, or the login if the database cannot say."""
        if not self.has_database:
            return self.login or ""
        try:
            with self.cursor() as cursor:
                row = cursor.execute(USER_NAME, {"uid": self.uid}).fetchone()
        except DatabaseUnavailable as exc:
            logger.warning("No name for %s: %s", self.login, exc)
            row = None
        return (row[0] if row else None) or self.login or ""

    # --- channels

    def can_subscribe(self, channel: str) -> bool:
        if channel == PARTIES:
            return self._may_read_parties()
        return channel.startswith(ROOM_PREFIX) and bool(
            ROOM_NAME.fullmatch(channel[len(ROOM_PREFIX) :])
        )

    def on_subscribe(self, channel: Any) -> bool:
        if isinstance(channel, str) and channel.startswith(ROOM_PREFIX):
            room_channel(channel[len(ROOM_PREFIX) :])  # a clear refusal
        return super().on_subscribe(channel)

    # --- chat

    def on_say(self, room: Any = None, text: Any = None) -> dict[str, Any]:
        """The ``say`` event: *text* in *room*, which this socket joined.

        The line goes through the database to everyone in the room, the
        sender too, with a position.
        """
        channel = room_channel(room)
        if channel not in self.channels:
            raise EventError(FORBIDDEN, f"join the room {room!r} first")
        if not isinstance(text, str) or not text.strip():
            raise EventError(BAD_REQUEST, "say something: a non-empty string")
        if len(text) > MAX_TEXT:
            raise EventError(PAYLOAD_TOO_LARGE, f"at most {MAX_TEXT} characters")
        user = self.context["user"]
        line = {
            "type": "say",
            "room": room,
            **user,
            "text": text.strip(),
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self.publish(line, channel, namespace=self.path)
        return {"ok": True}

    def on_history(self, room: Any = None) -> dict[str, Any]:
        """The ``history`` event: the last :data:`HISTORY` lines said in
        *room*, which this socket joined, oldest first, each with its
        position (a line that arrives live as well has the same one)."""
        channel = room_channel(room)
        if channel not in self.channels:
            raise EventError(FORBIDDEN, f"join the room {room!r} first")
        return {
            "lines": [
                {"line": message.payload, "position": message.token}
                for message in self.recent(channel, HISTORY)
            ]
        }

    # --- parties

    def on_parties(self) -> dict[str, Any]:
        """The ``parties`` event: the active parties, by name, at most
        :data:`MAX_PARTIES`; ``total`` counts them all."""
        if not self._may_read_parties():
            raise EventError(FORBIDDEN, "you may not read parties")
        with self.cursor() as cursor:
            rows = cursor.execute(READ_PARTIES, {"limit": MAX_PARTIES}).fetchall()
            (total,) = cursor.execute(COUNT_PARTIES).fetchone()
        return {
            "parties": [
                {"id": i, "name": name, "code": code, "active": active}
                for i, name, code, active in rows
            ],
            "total": total,
        }

    def _may_read_parties(self) -> bool:
        """Whether the user may read parties.

        :raises EventError: the database has no parties.
        """
        with self.cursor() as cursor:
            (may,) = cursor.execute(MAY_READ, {"uid": self.uid}).fetchone()
            (present,) = cursor.execute(HAS_PARTIES).fetchone()
        if not present:
            raise EventError(
                UNAVAILABLE,
                f"no parties in {self.db}: activate the Tryton module "
                "web_socketio_demo there",
            )
        return bool(may)
