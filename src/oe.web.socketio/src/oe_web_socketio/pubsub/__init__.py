"""Delivery behind one interface: the :class:`Broker`.

A broker carries the messages published *through a database* (with a
position, resumable) to the sockets of this server: publish to a socket,
a channel or a whole database (of one namespace or all), deliver in
order, replay from a position where it can. The core (namespaces, the
resume, long polling) knows only this interface; the composition root
(:mod:`oe_web_socketio.app`) chooses the broker:

* the PostgreSQL outbox
  (:class:`~oe_web_socketio.pubsub.postgres.OutboxBroker`, durable): for
  a host with a database (Tryton);
* :class:`~oe_web_socketio.pubsub.local.LocalBroker` (not durable, one
  process): a host without a database (a plain WSGI application); its one
  database lives in memory, with positions and a bounded history (see
  :mod:`oe_web_socketio.pubsub.local`);
* :data:`NULL` (:class:`NullBroker`): the default of the parts built
  without a server (a namespace made by hand, in tests): it delivers
  nothing, publishing is refused and a resume only subscribes.

What a durable broker guarantees:

* ordering: the messages of one database reach each socket in position
  order (the order their transactions committed), each once;
* durability: a message is delivered once its publishing transaction
  committed, never before, and is kept for
  :attr:`~oe_web_socketio.config.Config.history_max_age` seconds and at
  most :attr:`~oe_web_socketio.config.Config.history_max_count` messages;
* replay: :meth:`Broker.replay` returns every message after a position a
  client saw, up to another, in order; when it cannot (pruned, another
  database, a position it never gave) it raises
  :class:`~oe_web_socketio.exceptions.Resync`, and the client reloads
  what it shows. :mod:`oe_web_socketio.resume` joins the replay to the
  live path with no gap and no duplicate, relying on :meth:`Broker.head`
  advancing only after the messages up to it went out, without a yield;
* when the backend goes away (PostgreSQL restarts): publishing raises
  :class:`~oe_web_socketio.exceptions.DatabaseUnavailable`, so does a
  resume or a long poll before the broker is connected; the broker
  reconnects on its own and delivers what was committed meanwhile, in
  order, then serves again; a client that resumes misses nothing.

Durable messages are emitted to this server's sockets only (python-socketio's
``ignore_queue``): with several servers (or workers) on one database, each
reads the outbox itself, so a subscriber gets each message once, whichever
worker holds it. Messages to a socket id are live only (a reconnecting
socket has a new id).

Ephemeral emits (python-socketio's, a namespace's ``broadcast*``,
``send_to``…) are not a broker's: they cross workers through the client
manager of :mod:`oe_web_socketio.pubsub.fanout` (``local``,
``postgresql`` or ``redis``). What each guarantees, against the durable
messages above:

* while the manager's backend (PostgreSQL or Redis) is away, a worker
  still emits to its own sockets; the other workers miss what it emits
  meanwhile (counted, one log line per outage) and nothing is replayed
  when it is back; durable messages committed meanwhile arrive, in order;
* when a worker goes away, what it was emitting is lost, and its clients
  reconnect to another worker, where they resume the durable messages
  from their last position, missing nothing and getting nothing twice;
* order: the emits of one worker reach every socket in the order it made
  them (one ``NOTIFY`` channel, or one Redis channel); there is no order
  between the emits of two workers, nor between emits and durable
  messages.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from oe_web_socketio.exceptions import DatabaseUnavailable, EventError
from oe_web_socketio.protocol import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from oe_web_socketio.adapter import Adapter, AdapterQueue, Message

#: Why a server without a durable broker refuses to publish.
NO_BROKER = "this server has no database bridge"


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """Who a published message is for.

    :ivar database: the database it is published in.
    :ivar namespace: the namespace path of its sockets; ``None``: every
        namespace.
    :ivar channel: the channel; ``None``: every socket of the database
        (of *namespace*).
    :ivar sid: one socket, by id (live only, never replayed).
    """

    database: str
    namespace: str | None = None
    channel: str | None = None
    sid: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Replayed:
    """A message replayed to a resuming socket.

    :ivar position: its position (an increasing integer per database).
    :ivar token: the position as clients see it.
    :ivar channel: its channel, ``None`` for a broadcast.
    :ivar payload: the message (decoded JSON).
    """

    position: int
    token: str
    channel: str | None
    payload: Any


class Subscriber(Protocol):
    """What a broker needs of a socket: where it is, what it listens to."""

    @property
    def database(self) -> str | None: ...

    @property
    def path(self) -> str | None: ...

    @property
    def channels(self) -> frozenset[str]: ...


class Listening(Protocol):
    """A socket whose adapter takes the messages of its channel (see
    :mod:`oe_web_socketio.adapter`)."""

    @property
    def database(self) -> str | None: ...

    @property
    def path(self) -> str | None: ...

    @property
    def adapter(self) -> Adapter | None: ...

    @property
    def adapter_queue(self) -> AdapterQueue: ...


class Broker(Protocol):
    """Delivers messages published through a database to sockets.

    :ivar durable: whether messages survive a restart of this server.
    :ivar replays: whether messages have positions and can be replayed;
        ``False`` (:class:`NullBroker`): every method but the lifecycle
        ones refuses.
    """

    durable: bool
    replays: bool

    @property
    def default_database(self) -> str | None:
        """The database of sockets that did not authenticate."""

    def start(self) -> None:
        """Start delivering (connect in the background)."""

    def stop(self) -> None:
        """Stop delivering, release the connections."""

    def counters(self) -> dict[str, Callable[[], Any]]:
        """What ``/health`` shows of the broker, by name: functions of no
        argument (the state of each database's connection…)."""

    def publish(self, address: Address, payload: Any) -> None:
        """Publish *payload* to *address*, in a transaction of its own.

        :raises DatabaseUnavailable: the backend cannot take it now.
        :raises EventError: this broker does not publish.
        """

    def head(self, database: str) -> int:
        """The position of the last message delivered in *database*.

        :raises DatabaseUnavailable: not connected to *database* yet.
        """

    def token(self, database: str, position: int) -> str:
        """*position* as clients see it."""

    def locate(self, database: str, token: Any) -> int:
        """The position of the client's *token* in *database*.

        :raises Resync: it is not one, or one of another database.
        """

    def wait_until(self, database: str, position: int, timeout: float) -> bool:
        """Wait until *position* is delivered; return whether it is."""

    def replay(
        self,
        database: str,
        after: int,
        until: int,
        *,
        namespace: str | None,
        channels: Iterable[str],
    ) -> list[Replayed]:
        """The messages of *database* in ``(after, until]`` for a socket of
        *namespace* subscribed to *channels*, in order (broadcasts too).

        :raises Resync: some of them are no longer kept.
        :raises DatabaseUnavailable: the backend cannot be read.
        """

    def recent(
        self, database: str, channel: str, limit: int, *, namespace: str | None
    ) -> list[Replayed]:
        """The last *limit* messages delivered on *channel* of *database*
        to the sockets of *namespace* (those of every namespace too),
        oldest first, among those still kept: a channel's history, for a
        socket that joins it.

        :raises DatabaseUnavailable: the backend cannot be read.
        """

    def attach(self, socket: Listening) -> None:
        """Offer *socket*'s adapter the messages of its channel."""

    def detach(self, socket: Listening) -> None:
        """Stop offering *socket*'s adapter messages."""

    def wait_messages(
        self, database: str, channel: str, since: Any, timeout: float
    ) -> list[Message]:
        """The messages on *channel* after the position *since*, or the
        next one, waited for up to *timeout* seconds (long polling).

        :raises TimeoutError: nothing came in time.
        :raises DatabaseUnavailable: the backend cannot serve it.
        """


class NullBroker:
    """The broker of a part built without a server: nothing to deliver.
    Publishing is refused (:data:`NO_BROKER`, ``unavailable``), a long
    poll on a channel is :class:`DatabaseUnavailable`, and a resume only
    subscribes (see :mod:`oe_web_socketio.resume`). It holds no state:
    one instance serves any number of parts."""

    durable = False
    replays = False
    default_database: str | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def counters(self) -> dict[str, Callable[[], Any]]:
        return {}

    def publish(self, address: Address, payload: Any) -> None:
        raise EventError(UNAVAILABLE, NO_BROKER)

    def head(self, database: str) -> int:
        raise DatabaseUnavailable(database, NO_BROKER)

    def token(self, database: str, position: int) -> str:
        raise DatabaseUnavailable(database, NO_BROKER)

    def locate(self, database: str, token: Any) -> int:
        raise DatabaseUnavailable(database, NO_BROKER)

    def wait_until(self, database: str, position: int, timeout: float) -> bool:
        raise DatabaseUnavailable(database, NO_BROKER)

    def replay(
        self,
        database: str,
        after: int,
        until: int,
        *,
        namespace: str | None,
        channels: Iterable[str],
    ) -> list[Replayed]:
        raise DatabaseUnavailable(database, NO_BROKER)

    def recent(
        self, database: str, channel: str, limit: int, *, namespace: str | None
    ) -> list[Replayed]:
        raise DatabaseUnavailable(database, NO_BROKER)

    def attach(self, socket: Listening) -> None:
        pass

    def detach(self, socket: Listening) -> None:
        pass

    def wait_messages(
        self, database: str, channel: str, since: Any, timeout: float
    ) -> list[Message]:
        raise DatabaseUnavailable(database, NO_BROKER)


#: The broker of the parts built without one (see :class:`NullBroker`).
NULL = NullBroker()
