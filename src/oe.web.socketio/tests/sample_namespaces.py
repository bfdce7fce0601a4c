"""Namespaces the tests serve, in real server processes (``-n PATH=...``).

The tests put this directory on the server's ``PYTHONPATH``. What the
server does is observable through events: :data:`JOURNAL` records every
hook run and every side effect, and the ``journal`` event returns it.
"""

from __future__ import annotations

import base64

import gevent
from oe_web_socketio import EventError, Namespace
from oe_web_socketio.auth import Credentials, Identity
from oe_web_socketio.events import Events
from oe_web_socketio.exceptions import AuthenticationError, DatabaseUnavailable

#: Key of every test session: 64 hex digits, as Tryton's.
KEY = "0123456789abcdef" * 4

#: The users the test authenticator knows, by uid.
USERS = {1: Identity(db="oe", uid=1, login="admin"), 2: Identity("oe", 2, "bob")}


def session(uid: int, key: str = KEY) -> str:
    """A session as the Tryton web client encodes it."""
    login = USERS[uid].login if uid in USERS else "nobody"
    return base64.b64encode(f"{login}:{uid}:{key}".encode()).decode()


class FixedSessions:
    """An authenticator accepting the sessions of :data:`USERS` only."""

    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        identity = USERS.get(credentials.uid)
        if (
            identity is None
            or credentials.login != identity.login
            or credentials.key != KEY
            or credentials.database not in (None, identity.db)
        ):
            raise AuthenticationError("invalid session")
        JOURNAL.append(["authenticated", identity.uid, address])
        return identity


#: What happened in this server process, in order.
JOURNAL: list[list[object]] = []

#: The hooks of the test namespaces, apart from the default registry.
hooks = Events()


def _record(name):
    def hook(request, socket, context, *args):
        context.setdefault("hooks", []).append(name)
        JOURNAL.append([name, socket.sid, *[str(arg) for arg in args]])

    hook.__name__ = name
    return hook


hooks.on_connect(_record("connect"))
hooks.on_message(_record("message"))
hooks.on_message(_record("room message"), channel="^room-")
hooks.on_message(_record("desk message"), channel="^desk-")
hooks.on_subscribe(_record("subscribe"))
hooks.on_subscribe(_record("room subscribe"), channel="^room-")
hooks.on_unsubscribe(_record("room unsubscribe"), channel="^room-")
hooks.on_error(_record("error"))
hooks.on_disconnect(_record("disconnect"))
hooks.on_finish(_record("finish"))


@hooks.on_message(channel="^relay$")
def relay(request, socket, context, message):
    socket.broadcast_channel(message, "relay")


class Chat(Namespace):
    """The namespace most tests talk to."""

    authenticator = FixedSessions()
    events = hooks

    def on_connect(self):
        JOURNAL.append(["on_connect", self.sid, self.uid])

    def on_disconnect(self, reason):
        JOURNAL.append(["on_disconnect", self.sid, reason])

    def on_echo(self, *args):
        return args

    def on_whoami(self):
        return {"uid": self.uid, "login": self.login, "db": self.db}

    def on_touch(self, key):
        """A side effect, for the ACL tests."""
        JOURNAL.append(["touch", key])
        return "touched"

    def on_journal(self):
        return JOURNAL

    def on_hooks(self):
        return self.context.get("hooks", [])

    def on_boom(self):
        raise RuntimeError("boom")

    def on_unavailable(self):
        raise DatabaseUnavailable("oe", "connection refused")

    def on_refuse(self):
        raise EventError("teapot", "I am a teapot")

    def on_broadcast(self, message):
        self.broadcast(message)

    def on_send_and_broadcast(self, message):
        self.send_and_broadcast(message)

    def on_send(self, message):
        self.send(message)

    def on_broadcast_channel(self, message, channel=None):
        self.broadcast_channel(message, channel)

    def on_send_and_broadcast_channel(self, message, channel=None):
        self.send_and_broadcast_channel(message, channel)

    def on_channels(self):
        return sorted(self.channels)

    def on_sleepers(self, count):
        """Spawn *count* greenlets that never end by themselves."""
        for _ in range(count):
            self.spawn(gevent.sleep, 3600)
        return self.greenlet_count

    def on_block(self):
        """A handler that never returns by itself."""
        JOURNAL.append(["block", self.sid])
        gevent.sleep(3600)

    def on_failing_greenlet(self):
        def fail():
            raise ValueError("failing greenlet")

        self.spawn(fail).join()
        return "joined"

    def on_leave(self):
        """Disconnect from the handler of an event of the socket itself."""
        self.spawn(gevent.sleep, 3600)
        self.disconnect()
        JOURNAL.append(["left", self.sid])
        return "left"


class Private(Chat):
    """Refuses clients that present no session."""

    allow_anonymous = False


class Public(Chat):
    """Every event allowed to anyone."""

    def get_initial_acl(self):
        return None


class Refusing(Chat):
    """Refuses every connection in :meth:`on_connect`."""

    def on_connect(self):
        from socketio.exceptions import ConnectionRefusedError

        JOURNAL.append(["refusing", self.sid])
        self.spawn(gevent.sleep, 3600)
        raise ConnectionRefusedError("go away", {"code": "closed"})


class Broken(Chat):
    """Fails in :meth:`on_connect`."""

    def on_connect(self):
        raise RuntimeError("broken on_connect")


class Plugin(Chat):
    """Registered through an entry point by the tests."""


class Rooted(Chat):
    """Sets its own path."""

    path = "/rooted"
