"""Namespaces: one object per connected socket, as in gevent-socketio.

Subclass :class:`Namespace` and register it at a path
(:meth:`oe_web_socketio.sockets.SocketIO.add_namespace`, or the entry point
group ``oe_web_socketio.namespaces``). Each socket that connects to the
path gets its own instance, which lives as long as the connection and
knows who is on the other end (:attr:`~Namespace.uid`,
:attr:`~Namespace.login`, :attr:`~Namespace.db`)::

    class Chat(Namespace):
        def on_shout(self, text):          # the client's emit("shout", text)
            self.broadcast_channel(text.upper())
            return "shouted"               # its acknowledgement

A client that presents a session when it connects (see
:mod:`oe_web_socketio.auth`) is authenticated before :meth:`~Namespace.on_connect`
runs; a wrong session refuses the connection. What a client may do then:

* emit an event ``x``: the method ``on_x`` runs with the event's
  arguments, if the ACL allows ``x`` (see :meth:`Namespace.get_initial_acl`);
  its return value is the acknowledgement (a tuple is several arguments).
  Handlers are plain methods; ``on_connect`` and ``on_disconnect`` are
  lifecycle hooks no client can call. Any refusal or failure is answered
  as :mod:`oe_web_socketio.protocol` describes;
* ``session_id`` (allowed before authentication):
  :meth:`~Namespace.on_session_id`;
* ``subscribe`` / ``unsubscribe`` a channel:
  :meth:`~Namespace.on_subscribe`, :meth:`~Namespace.on_unsubscribe`;
* ``message`` ``(message[, channel])``: :meth:`~Namespace.on_message`
  runs the ``on_message`` hooks of :mod:`oe_web_socketio.events`;
* ``resume`` ``(position[, channels])``: :meth:`~Namespace.on_resume`,
  subscribe and receive what was published in the database since
  *position* (see :mod:`oe_web_socketio.bridge`).

What the server sends with :meth:`~Namespace.send` and the other message
helpers is the event ``message`` with the arguments ``(message)``, or
``(message, channel)`` when it was sent on a channel. Messages published
in the database (:mod:`oe_web_socketio.outbox`) arrive as ``message`` with
``(message, channel, position)`` (``channel`` ``null`` for a broadcast).

A namespace with an :attr:`~Namespace.adapter_class` also receives the
database messages of the adapter's channel in a queue of its own, read
with :meth:`~Namespace.listen` (see :mod:`oe_web_socketio.adapter`).

The class is made of parts, one job each, in modules of their own:
:mod:`~oe_web_socketio.channels` (what a socket subscribes to, and who
may), :mod:`~oe_web_socketio.delivery` (the database's messages, the
resume, the adapter) and :mod:`~oe_web_socketio.jobs` (the socket's
greenlets). What stays here: the socket's identity and authentication,
its ACL, its emits and its errors.

Invariants:

* channels are python-socketio rooms of this namespace, so a broadcast is
  one emit of python-socketio, which encodes the packet once;
* every greenlet :meth:`~Namespace.spawn` starts, and every event handler
  still running, is killed when the socket disconnects (after at most
  :attr:`~Namespace.kill_timeout` seconds, survivors are logged);
* ``user:<id>`` is only ever the channel of the socket's own user
  (:meth:`~Namespace.can_subscribe`);
* with a database bridge, a socket is in the rooms of its database and of
  its channels there (:mod:`oe_web_socketio.rooms`), except while it
  resumes.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
import gevent.event
import gevent.lock

from oe_web_socketio import auth, pubsub, rooms
from oe_web_socketio import events as events_module
from oe_web_socketio.adapter import Adapter, AdapterQueue
from oe_web_socketio.channels import (
    USER_CHANNEL_PREFIX,
    Channels,
    channel_argument,
)
from oe_web_socketio.delivery import Delivery
from oe_web_socketio.exceptions import (
    AuthenticationError,
    DatabaseUnavailable,
    EventError,
    HostError,
)
from oe_web_socketio.hosts import NO_AUTHENTICATOR, Host, SessionHost
from oe_web_socketio.jobs import Jobs
from oe_web_socketio.logs import shorten
from oe_web_socketio.protocol import (
    AUTHENTICATION_FAILED,
    BAD_REQUEST,
    ERROR_EVENT,
    FORBIDDEN,
    MESSAGE_EVENT,
    PRESENCE_EVENT,
    UNAVAILABLE,
    UNKNOWN_EVENT,
    error_payload,
)
from oe_web_socketio.pubsub.presence import DATABASE, Present

if TYPE_CHECKING:
    from collections.abc import Iterator

    import psycopg
    import socketio

    from oe_web_socketio.pool import CursorPools
    from oe_web_socketio.pubsub import Broker
    from oe_web_socketio.pubsub.presence import Presence

#: Why :meth:`Namespace.cursor` has no cursor to lend (the client is told).
NO_DATABASE = "this server has no database"

__all__ = [
    "NO_NAMES",
    "USER_CHANNEL_PREFIX",
    "Namespace",
    "Request",
    "shorten",
]

logger = logging.getLogger(__name__)


#: The empty set of channels or rooms, shared (see :mod:`oe_web_socketio.rooms`).
NO_NAMES = rooms.NO_NAMES


class Request:
    """A read-only view of the handshake of a socket.

    :ivar environ: the WSGI environ of the request that opened the
        Engine.IO session (read-only).
    :ivar address: the client's address, behind a trusted proxy the one it
        forwarded (see :func:`oe_web_socketio.auth.client_address`).
    """

    __slots__ = ("_headers", "address", "environ")

    def __init__(self, environ: Mapping[str, Any], address: str | None) -> None:
        self.environ: Mapping[str, Any] = MappingProxyType(environ)
        self.address = address
        self._headers: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Request from {self.address}>"

    @property
    def headers(self) -> Mapping[str, str]:
        """The HTTP headers, by lower-case name (``"user-agent"``)."""
        if self._headers is None:
            headers = {
                key[5:].replace("_", "-").lower(): str(value)
                for key, value in self.environ.items()
                if key.startswith("HTTP_")
            }
            for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                if self.environ.get(key):
                    headers[key.replace("_", "-").lower()] = str(self.environ[key])
            self._headers = MappingProxyType(headers)
        return self._headers

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string: the client's ``query`` option, and ``EIO``…"""
        return urllib.parse.parse_qs(self.environ.get("QUERY_STRING", ""))


class Namespace(Channels, Delivery, Jobs):
    """Base class of namespaces; an instance serves one connected socket.

    Instances are created by the server when a socket connects: do not
    create them, override :meth:`on_connect` to set one up.

    :ivar path: the path (Socket.IO namespace) the socket connected to.
    :ivar sid: the socket's id in this namespace.
    :ivar request: the :class:`Request` of the handshake.
    :ivar context: a dict for the application, alive as long as the
        socket; the ``context`` argument of the hooks.
    :ivar identity: the :class:`~oe_web_socketio.auth.Identity` of the
        authenticated user, or ``None``.
    :ivar allowed_events: the ACL: names of the events the client may
        emit, or ``None`` for every event the class handles.
    :ivar connected: false once the socket began to disconnect.
    """

    #: The path the class is served at when registered without one (an
    #: entry point's name gives the path otherwise).
    path: str | None = None

    #: The registry of the hooks run for this namespace.
    events: ClassVar[events_module.Events] = events_module.default

    #: Whether a client presenting no credentials may connect. It is then
    #: allowed only the events of :meth:`get_initial_acl` until it
    #: authenticates with the ``session_id`` event.
    allow_anonymous: ClassVar[bool] = True

    #: Validates the sessions of this namespace's clients instead of the
    #: server's host, when set (through a
    #: :class:`~oe_web_socketio.hosts.SessionHost` of its own).
    authenticator: ClassVar[auth.Authenticator | None] = None

    #: Most channels a client may subscribe this socket to.
    max_channels: ClassVar[int] = 100

    #: Longest channel name a client may subscribe to.
    max_channel_length: ClassVar[int] = 200

    #: Seconds the greenlets of a socket have to die once killed at its
    #: disconnection.
    kill_timeout: ClassVar[float] = 1.0

    #: The adapter whose channel's database messages this socket receives
    #: (see :meth:`listen`), or ``None``.
    adapter_class: ClassVar[type[Adapter] | None] = None

    #: Seconds :meth:`secure_emit` waits for the acknowledgement.
    ack_timeout: ClassVar[float] = 30.0

    #: Whether the namespace keeps presence: who is connected in each
    #: database and subscribed to each channel, across every worker
    #: (:meth:`presence`, the client's ``presence`` event), and tells its
    #: sockets who arrives and leaves (the ``presence`` event).
    track_presence: ClassVar[bool] = False

    def __init__(
        self,
        server: socketio.Server,
        path: str,
        sid: str,
        request: Request,
        authenticator: auth.Authenticator | None = None,
        broker: Broker = pubsub.NULL,
        host: Host | None = None,
        pools: CursorPools | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.server = server
        self.path = path
        self.sid = sid
        self.request = request
        self.context: dict[str, Any] = {}
        self.identity: auth.Identity | None = None
        self.connected = True
        #: Who authenticates the clients: *host* (the dispatcher gives the
        #: server's, or for a class with its own :attr:`authenticator` a
        #: session host of its own), else sessions checked by the class's
        #: authenticator or *authenticator* (none: sessions are refused).
        self._host: Host = (
            host
            if host is not None
            else SessionHost(self.authenticator or authenticator)
        )
        self._evidence: tuple[Mapping[str, Any], Any] | None = None
        self._channels: frozenset[str] = NO_NAMES
        #: Greenlets owned by the socket: spawned, and handlers running
        #: (``None`` while there are none).
        self._greenlets: set[gevent.Greenlet] | None = None
        self.allowed_events: set[str] | None = None
        self.reset_acl()
        #: What delivers the messages published through the database
        #: (:mod:`oe_web_socketio.pubsub`); a server without a database has
        #: the in-process one; a namespace built by hand
        #: :data:`~oe_web_socketio.pubsub.NULL`, which delivers none.
        self.broker = broker
        #: The read-only cursors of the server's host (:meth:`cursor`), or
        #: ``None``: a host without databases.
        self._pools = pools
        #: The adapter of this socket (its queue: :attr:`adapter_queue`).
        self.adapter: Adapter | None = None
        self._adapter_queue: AdapterQueue | None = None
        if self.adapter_class is not None:
            self.adapter = self.adapter_class(self)
        #: The bridge rooms this socket is in (see :meth:`_sync_rooms`).
        self._rooms: frozenset[str] = NO_NAMES
        self._holding = False
        #: Serializes :meth:`on_resume` (created by its first call).
        self._resume_lock: gevent.lock.BoundedSemaphore | None = None
        #: Where presence is kept (:mod:`oe_web_socketio.pubsub.presence`);
        #: ``None``: nowhere (a namespace built by hand).
        self._presence = presence
        #: Whether this socket was recorded present (in its database).
        self._present = False

    def __repr__(self) -> str:
        who = self.login if self.identity is not None else "anonymous"
        return f"<{type(self).__name__} {self.path} {self.sid} {who}>"

    # --- lifecycle hooks

    def on_connect(self) -> None:
        """Run when the socket connects, before the ``on_connect`` hooks.

        Raise :class:`socketio.exceptions.ConnectionRefusedError` to refuse
        the connection; its message reaches the client's ``connect_error``.
        The client does not see the connection before this returns, but
        it may already be sent events and be subscribed to channels.
        """

    def on_disconnect(self, reason: str) -> None:
        """Run when the socket disconnects, before the hooks, once its
        greenlets are killed.

        :param reason: python-socketio's reason, e.g. ``"client disconnect"``.
        """

    # --- identity

    @property
    def uid(self) -> int | str | None:
        """The id of the authenticated user (an :class:`int` for Tryton;
        what a plain WSGI host gives, or ``None``), or ``None``."""
        return self.identity.uid if self.identity is not None else None

    @property
    def login(self) -> str | None:
        """The login of the authenticated user, or ``None``."""
        return self.identity.login if self.identity is not None else None

    @property
    def db(self) -> str | None:
        """The database of the authenticated user, or ``None``."""
        return self.identity.db if self.identity is not None else None

    @property
    def database(self) -> str | None:
        """The database whose messages this socket receives: the user's,
        or for an anonymous socket, or a user of a host without databases
        (whose identities name none), the broker's database: the server's
        first one (``None`` for :data:`~oe_web_socketio.pubsub.NULL`)."""
        if self.identity is not None and self.identity.db is not None:
            return self.identity.db
        return self.broker.default_database

    @property
    def has_database(self) -> bool:
        """Whether :meth:`cursor` can lend cursors: the server's host has
        databases (Tryton), and this socket is of one of them."""
        return self._pools is not None and self.database is not None

    @contextlib.contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        """A read-only cursor on this socket's :attr:`database`, lent by
        the host's pool (:meth:`oe_web_socketio.pool.CursorPools.cursor`)
        for the ``with`` block, in a transaction rolled back at its end; do
        not keep it beyond the block. A handler that waits for one holds
        one of the pool's ``max_cursor`` connections: keep blocks short.

        :raises EventError: ``unavailable``, the server has no database
            (a plain WSGI host; see :attr:`has_database`): the client is
            told so.
        :raises DatabaseUnavailable: no cursor could be had in time
            (answered ``unavailable``, the client may retry).
        """
        if self._pools is None or self.database is None:
            raise EventError(UNAVAILABLE, NO_DATABASE)
        with self._pools.cursor(self.database) as cursor:
            yield cursor

    def authenticate(self, identity: auth.Identity) -> None:
        """Make *identity* the user of this socket and apply
        :meth:`get_authenticated_acl`."""
        moved = self.broker.replays and self.database != (
            identity.db if identity.db is not None else self.broker.default_database
        )
        if moved:
            self.detach()
        self.identity = identity
        self.allowed_events = _acl(self.get_authenticated_acl())
        if moved:
            self.attach()

    def check_credentials(self, credentials: auth.Credentials) -> auth.Identity:
        """Validate the session *credentials* as this namespace's host does
        (see :meth:`~oe_web_socketio.hosts.SessionHost.check`).

        :raises AuthenticationError: they are not valid, or the host does
            not check sessions.
        """
        if not isinstance(self._host, SessionHost):
            raise AuthenticationError(NO_AUTHENTICATOR)
        return self._host.check(credentials, self.request.address)

    def identify(
        self, environ: Mapping[str, Any], auth_payload: Any
    ) -> auth.Identity | None:
        """Who presents the credentials of *environ* (a request) and
        *auth_payload* (the Socket.IO ``auth`` payload), or ``None`` if
        none are presented; does not authenticate the socket.

        The socket's host decides
        (:meth:`oe_web_socketio.hosts.Host.authenticate`): the server's,
        or sessions checked by the class's own :attr:`authenticator`.

        :raises AuthenticationError: the credentials are refused.
        :raises DatabaseUnavailable: they cannot be checked now.
        :raises HostError: the host application failed.
        """
        identity = self._host.authenticate(environ, auth_payload, self.request.address)
        if identity is not None:
            # What proved it, to prove it again (see :meth:`recheck`); the
            # environ is python-socketio's, kept for the session anyway.
            self._evidence = (environ, auth_payload)
        return identity

    def recheck(self) -> bool | None:
        """Whether the credentials that authenticated this socket still
        prove the same user (the session was not logged out, has not
        expired, the user is still active), checked again as at
        connection.

        :returns: ``True`` if they do (or the socket is anonymous),
            ``False`` if they do not, ``None`` if it cannot be told now
            (the database or the host application failed: logged).
        """
        if self.identity is None or self._evidence is None:
            return True
        environ, auth_payload = self._evidence
        try:
            return self.identify(environ, auth_payload) == self.identity
        except AuthenticationError:
            return False
        except (DatabaseUnavailable, HostError) as exc:
            logger.warning("Cannot check the session of %r again: %s", self, exc)
            return None

    def on_session_id(self, session: Any) -> dict[str, Any]:
        """The ``session_id`` event: authenticate after connecting.

        :param session: ``base64("login:uid:key")`` as the Tryton web
            client builds it, or ``{"session": …, "database": …}`` (for
            a plain WSGI host, what its authenticate callable takes as
            the ``auth`` payload; a string comes as ``{"session": …}``).
        :returns: ``{"uid": …, "login": …, "db": …}``.
        :raises AuthenticationError: the session is not valid.
        """
        identity = None
        if isinstance(session, str):
            identity = self.identify({}, {"session": session})
        elif isinstance(session, Mapping):
            identity = self.identify({}, session)
        if identity is None:
            raise EventError(BAD_REQUEST, "expected a session or {session, database}")
        if self.identity is not None and self.identity != identity:
            raise EventError(
                AUTHENTICATION_FAILED, "this socket is authenticated as another user"
            )
        self.authenticate(identity)
        return {"uid": identity.uid, "login": identity.login, "db": identity.db}

    # --- ACL

    def get_initial_acl(self) -> Iterable[str] | None:
        """The events a client may emit before it is authenticated.

        ``None`` allows every event the class handles. The default allows
        only ``session_id``, the event that authenticates.
        """
        return {"session_id"}

    def get_authenticated_acl(self) -> Iterable[str] | None:
        """The events a client may emit once authenticated; ``None``, the
        default, allows every event the class handles."""
        return None

    def reset_acl(self) -> None:
        """Set the ACL back to :meth:`get_initial_acl`."""
        self.allowed_events = _acl(self.get_initial_acl())

    def lift_acl_restrictions(self) -> None:
        """Allow every event the class handles."""
        self.allowed_events = None

    def add_acl_method(self, event: str) -> None:
        """Allow the client to emit *event* (it already may if the ACL is
        lifted; gevent-socketio restricted the ACL to *event* then)."""
        if self.allowed_events is not None:
            self.allowed_events.add(event)

    def del_acl_method(self, event: str) -> None:
        """Forbid the client to emit *event*.

        :raises ValueError: the ACL is lifted; there is nothing to remove
            from (set one with :meth:`reset_acl` first).
        """
        if self.allowed_events is None:
            raise ValueError(f"cannot forbid {event!r}: the ACL of {self!r} is lifted")
        self.allowed_events.discard(event)

    def is_event_allowed(self, event: str) -> bool:
        """Whether the ACL lets the client emit *event*."""
        return self.allowed_events is None or event in self.allowed_events

    # --- messages

    def on_message(self, message: Any, channel: Any = None) -> None:
        """The ``message`` event: run the ``on_message`` hooks.

        :param channel: the channel the message is sent on, which the
            socket must be subscribed to. Hooks bound to channels run if
            they match it; without it, if they match any channel of the
            socket. Override this method to know the channel.
        """
        channels: Iterable[str] | None = None
        if channel is not None:
            channel = channel_argument(channel)
            if channel not in self._channels:
                raise EventError(FORBIDDEN, f"not subscribed to {shorten(channel)}")
            channels = (channel,)
        self.events.on_message.send(
            self.request, self, self.context, message, channels=channels
        )

    def emit(
        self, event: str, *args: Any, callback: Callable[..., Any] | None = None
    ) -> None:
        """Emit *event* with *args* to this socket.

        The socket is this worker's: the emit is local, never published to
        the other workers (:mod:`oe_web_socketio.pubsub.fanout`), and does
        not yield.

        :param callback: called with the client's acknowledgement.
        """
        self.server.emit(
            event,
            args,
            to=self.sid,
            namespace=self.path,
            callback=callback,
            ignore_queue=True,
        )

    def send(self, message: Any) -> None:
        """Send *message* to this socket (local, as :meth:`emit`)."""
        self.server.emit(
            MESSAGE_EVENT,
            (message,),
            to=self.sid,
            namespace=self.path,
            ignore_queue=True,
        )

    def emit_to(self, sid: str, event: str, *args: Any) -> None:
        """Emit *event* with *args* to the socket *sid* of this namespace,
        held by this worker or another (through the broker of
        :mod:`oe_web_socketio.pubsub.fanout`); nothing happens if no worker
        holds it."""
        self.server.emit(event, args, to=sid, namespace=self.path)

    def send_to(self, sid: str, message: Any) -> None:
        """Send *message* to the socket *sid* of this namespace, wherever it
        is held (see :meth:`emit_to`)."""
        self.server.emit(MESSAGE_EVENT, (message,), to=sid, namespace=self.path)

    def broadcast(self, message: Any) -> None:
        """Send *message* to every socket of the namespace but this one."""
        self.server.emit(
            MESSAGE_EVENT, (message,), namespace=self.path, skip_sid=self.sid
        )

    def send_and_broadcast(self, message: Any) -> None:
        """Send *message* to every socket of the namespace."""
        self.server.emit(MESSAGE_EVENT, (message,), namespace=self.path)

    def broadcast_channel(self, message: Any, channel: str | None = None) -> None:
        """Send *message* on *channel* to its subscribers but this socket.

        :param channel: the channel; ``None`` for each channel this socket
            is in (a socket in several of them receives it once for each).
        """
        for name in self._target_channels(channel):
            self.server.emit(
                MESSAGE_EVENT,
                (message, name),
                to=rooms.subscribers(name),
                namespace=self.path,
                skip_sid=self.sid,
            )

    def send_and_broadcast_channel(
        self, message: Any, channel: str | None = None
    ) -> None:
        """Like :meth:`broadcast_channel`, and this socket receives it too
        (once for each channel, subscribed to it or not)."""
        for name in self._target_channels(channel):
            self.server.emit(
                MESSAGE_EVENT,
                (message, name),
                to=[rooms.subscribers(name), self.sid],
                namespace=self.path,
            )

    def _target_channels(self, channel: str | None) -> Iterable[str]:
        return self._channels if channel is None else (channel,)

    def error(self, code: str, message: str) -> None:
        """Send the ``error`` event, ``{"error": {code, message}}``."""
        self.server.emit(
            ERROR_EVENT,
            error_payload(code, message),
            to=self.sid,
            namespace=self.path,
            ignore_queue=True,
        )

    def disconnect(self) -> None:
        """Disconnect this socket from the namespace."""
        self.server.disconnect(self.sid, namespace=self.path)

    # --- presence

    def presence(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Who is connected to this namespace, across every worker: in this
        socket's database, or subscribed to *channel* there.

        :returns: ``[{"sid", "uid", "login"}, …]`` in the order they came
            (one item per socket: a user with two tabs is there twice);
            ``[]`` unless :attr:`track_presence` is on.
        :raises DatabaseUnavailable: the store cannot be read now.
        """
        if not self.track_presence or self._presence is None or self.database is None:
            return []
        return [
            present.as_dict()
            for present in self._presence.members(
                str(self.path), self.database, DATABASE if channel is None else channel
            )
        ]

    def on_presence(self, channel: Any = None) -> list[dict[str, Any]]:
        """The ``presence`` event: :meth:`presence` of the database, or of
        *channel*, which the socket must be subscribed to."""
        if not self.track_presence:
            raise EventError(UNKNOWN_EVENT, "this namespace keeps no presence")
        if channel is not None:
            channel = channel_argument(channel)
            if channel not in self._channels:
                raise EventError(FORBIDDEN, f"not subscribed to {shorten(channel)}")
        return self.presence(channel)

    def enter_presence(self) -> None:
        """Record this socket present in its database, and tell the others
        (the dispatcher calls it once the socket is connected)."""
        if self.track_presence and not self._present:
            self._present = True
            self._presence_changed("join", None)

    def leave_presence(self) -> None:
        """Forget this socket everywhere, and tell the others (the
        dispatcher calls it when the socket disconnects)."""
        if not self._present:
            return
        for channel in sorted(self._channels):
            self._presence_changed("leave", channel, record=False)
        self._presence_changed("leave", None, record=False)
        self._present = False
        if self._presence is not None:
            self._presence.leave(str(self.path), self.sid, None)

    def _presence_changed(
        self, event: str, channel: str | None, *, record: bool = True
    ) -> None:
        """Record that this socket arrived on, or left, *channel* (``None``:
        its database) and tell the sockets there, on every worker."""
        if not self._present or self._presence is None or self.database is None:
            return
        me = Present(self.sid, self.uid, self.login)
        if record:
            place = DATABASE if channel is None else channel
            if event == "join":
                self._presence.enter(str(self.path), self.database, place, me)
            else:
                self._presence.leave(str(self.path), self.sid, place)
        self.server.emit(
            PRESENCE_EVENT,
            {"event": event, "channel": channel, **me.as_dict()},
            to=(
                rooms.database_room(self.database)
                if channel is None
                else rooms.subscribers(channel)
            ),
            namespace=self.path,
            skip_sid=self.sid,
        )

    # --- errors

    def report_error(self, exc: BaseException, during: str) -> None:
        """Log *exc* with its traceback and run the ``on_error`` hooks."""
        logger.error(
            "Error in %s of %r from %s",
            during,
            self,
            self.request.address,
            exc_info=exc,
        )
        try:
            self.events.on_error.send(self.request, self, self.context, exc)
        except Exception:
            logger.exception("Error in an on_error hook of %r", self)


def _acl(events: Iterable[str] | None) -> set[str] | None:
    return None if events is None else set(events)
