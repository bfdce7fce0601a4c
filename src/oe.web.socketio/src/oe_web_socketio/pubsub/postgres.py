"""The PostgreSQL outbox's broker (the "database bridge"): messages
published in PostgreSQL, to sockets.

One :class:`OutboxBroker` serves every database of the server, made of:

* for each database, an :class:`~oe_web_socketio.pubsub.feed.OutboxFeed`
  fed by a :class:`~oe_web_socketio.listener.Listener` on the channel
  :data:`~oe_web_socketio.outbox.NOTIFY_CHANNEL` (and on the channels of
  other consumers, such as Tryton's ``bus``, which this module hands
  their notifications): it reads the rows positioned at commit
  (:mod:`oe_web_socketio.outbox`), in one query for all the notifications
  that arrived together, and delivers them in position order through the
  :class:`~oe_web_socketio.pubsub.deliver.Deliverer`:

  * a row with a channel: the event ``message`` with the arguments
    ``(message, channel, position)`` to the sockets of the database
    subscribed to the channel, one emit per namespace (python-socketio
    encodes the packet once), and to the adapter queues of that channel
    (see :mod:`oe_web_socketio.adapter`);
  * a row without one: ``(message, None, position)`` to every socket of
    the database (of its namespace, if it names one);
  * a row with a socket id: ``(message, None, position)`` to that socket;

* the reads of the past, here: :meth:`OutboxBroker.replay` for the resume
  and :meth:`OutboxBroker.wait_messages` for long polls, through the
  read-only cursor pools;
* publishing, through a :class:`~oe_web_socketio.pubsub.publisher.Publisher`.

``position`` is a string, ``"<epoch>:<n>"``. A client keeps the last one
it received; when it connects again, to this server or another, after a
restart or not, it emits ``resume`` with it, and
:mod:`oe_web_socketio.resume` sends it every message of its channels it
missed (read with :meth:`OutboxBroker.replay`), in order, once, then puts it
back on the live path, with no gap and no duplicate between the two.
Messages are kept :attr:`OutboxBroker.history_max_age` seconds and at most
:attr:`OutboxBroker.history_max_count` of them; a client
whose position is older than that, from the future, or from another
database (another epoch) is told to resynchronise instead.

Invariants (those of reading the outbox: :mod:`oe_web_socketio.pubsub.feed`):

* a socket's rooms on the live path are those of its database and of its
  channels there (:mod:`oe_web_socketio.rooms`), which no client can
  name: messages of one database never reach the sockets of another;
* the resume's side reads the position delivered last only once the
  feed delivered every message up to it, without a yield.

Caveats:

* a message to a socket id is live only: the id of a socket that
  reconnects is new, so it is never replayed;
* in an outbox without the trigger, rows committed while no server
  listened get positions when a server connects again, in transaction id
  order (PostgreSQL keeps no commit order for them);
* with several servers on one database, a client that resumes on a
  server a few milliseconds behind the one it left waits up to
  :data:`oe_web_socketio.resume.WAIT` seconds for it to catch up.

Import this module after :func:`oe_web_socketio.patch.patch`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import gevent

from oe_web_socketio import outbox
from oe_web_socketio.adapter import Message
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.exceptions import DatabaseUnavailable, Resync
from oe_web_socketio.listener import Listener
from oe_web_socketio.pubsub import Address, Replayed
from oe_web_socketio.pubsub.deliver import Deliverer
from oe_web_socketio.pubsub.feed import Outbox, OutboxFeed
from oe_web_socketio.pubsub.publisher import Publisher

if TYPE_CHECKING:
    import socketio
    from prometheus_client import Histogram

    from oe_web_socketio.pool import CursorPools
    from oe_web_socketio.pubsub import Listening

#: Its log lines keep the name of the module it was in.
logger = logging.getLogger("oe_web_socketio.bridge")

#: A consumer of another notification channel: called with the database
#: name and the payload of each notification, in order, in the listener's
#: greenlet (it must not block).
Consumer = Callable[[str, str], None]


class OutboxBroker:
    """Deliver the messages of the outboxes of *databases* to sockets: the
    durable :class:`~oe_web_socketio.pubsub.Broker` of PostgreSQL.

    :param server: the python-socketio server.
    :param directory: where the connected sockets are.
    :param pools: read-only cursors, to replay missed messages.
    :param conninfo: the connection string of a database, by name.
    :param databases: the databases served; the first one is the database
        of anonymous sockets.
    :param consumers: more notification channels to listen on, and who
        consumes them (Tryton's ``bus``).
    :param history_max_age: seconds a message is kept for clients that
        resume (default :attr:`history_max_age`).
    :param history_max_count: most messages kept for them (default
        :attr:`history_max_count`).
    :param lag: the histogram of the delivery lag each feed observes (see
        :func:`oe_web_socketio.metrics.lag_histogram`); ``None``: none.
    """

    #: Messages survive a restart of this server.
    durable = True
    #: Messages have positions, and can be replayed.
    replays = True
    #: Seconds a message is kept for clients that resume.
    history_max_age = 24 * 60 * 60.0
    #: Most messages kept for clients that resume.
    history_max_count = 100_000
    #: Seconds between two prunings of the outbox.
    prune_interval = 60.0
    #: Rows read at once from the outbox.
    page_size = 500

    def __init__(
        self,
        server: socketio.Server,
        directory: SocketDirectory,
        pools: CursorPools,
        conninfo: Callable[[str], str],
        databases: Iterable[str],
        consumers: Mapping[str, Consumer] | None = None,
        *,
        history_max_age: float | None = None,
        history_max_count: int | None = None,
        lag: Histogram | None = None,
    ) -> None:
        if history_max_age is not None:
            self.history_max_age = history_max_age
        if history_max_count is not None:
            self.history_max_count = history_max_count
        self.server = server
        self.pools = pools
        self.conninfo = conninfo
        self.databases = tuple(databases)
        self.consumers = dict(consumers or {})
        #: Emits what is delivered to the sockets of this process.
        self.deliverer = Deliverer(server, directory)
        #: Reads each database's outbox as it is notified.
        self.feeds = {
            database: OutboxFeed(
                database,
                self.deliverer,
                page_size=self.page_size,
                prune_interval=self.prune_interval,
                history_max_age=self.history_max_age,
                history_max_count=self.history_max_count,
                lag=lag,
            )
            for database in self.databases
        }
        #: Writes what is published to the outboxes.
        self.publisher = Publisher(conninfo)

    @property
    def default_database(self) -> str | None:
        """The database of sockets that did not authenticate."""
        return self.databases[0] if self.databases else None

    # --- lifecycle

    def start(self) -> None:
        """Start a listener per database (they connect in the background)."""
        for database, feed in self.feeds.items():
            handlers: dict[str, Any] = {outbox.NOTIFY_CHANNEL: feed.notified}
            for channel, consumer in self.consumers.items():
                handlers[channel] = lambda conn, payloads, d=database, c=consumer: (
                    _consume(c, d, payloads)
                )
            feed.listener = Listener(
                database,
                self.conninfo(database),
                handlers,
                on_connect=feed.connected,
                on_idle=feed.catch_up,
            )
            feed.listener.start()

    def stop(self) -> None:
        """Stop the listeners and close the publishing connections."""
        for feed in self.feeds.values():
            if feed.listener is not None:
                feed.listener.stop()
        self.publisher.close()

    def counters(self) -> dict[str, Callable[[], Any]]:
        """``listeners``: :meth:`health`, for ``/health``."""
        return {"listeners": self.health}

    def health(self) -> dict[str, Any]:
        """The state of each database's listener and outbox, for /health."""
        return {
            database: {
                **(feed.listener.health() if feed.listener else {}),
                "delivered": feed.outbox.delivered,
                "messages": feed.messages,
            }
            for database, feed in self.feeds.items()
        }

    # --- the sockets' side

    def attach(self, socket: Listening) -> None:
        """Deliver the messages of its adapter's channel to *socket*."""
        self.deliverer.attach(socket)

    def detach(self, socket: Listening) -> None:
        """Stop delivering adapter messages to *socket*."""
        self.deliverer.detach(socket)

    # --- the resume's side (see :mod:`oe_web_socketio.resume`)

    def _state(self, database: str) -> Outbox:
        feed = self.feeds.get(database)
        if feed is None or feed.outbox.epoch is None:
            raise DatabaseUnavailable(database, "the database bridge is not connected")
        return feed.outbox

    def head(self, database: str) -> int:
        """The position of the last message delivered in *database*.

        :raises DatabaseUnavailable: the bridge of *database* is not
            connected yet.
        """
        return self._state(database).delivered

    def token(self, database: str, position: int) -> str:
        """*position* as clients see it."""
        return self._state(database).token(position)

    def locate(self, database: str, token: Any) -> int:
        """The position of a client's *token* in *database*.

        :raises Resync: it is not a position, or one of another epoch.
        """
        parsed = outbox.parse_position(token)
        if parsed is None:
            raise Resync("not a position")
        epoch, position = parsed
        if epoch != self._state(database).epoch:
            raise Resync("a position of another database")
        return position

    def wait_until(self, database: str, position: int, timeout: float) -> bool:
        """Wait until *position* is delivered; return whether it is."""
        return self._state(database).wait_for(position, timeout)

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
        *namespace* subscribed to *channels* (and the broadcasts), read
        page by page.

        :raises Resync: some were pruned (checked after the read).
        :raises DatabaseUnavailable: the database cannot be read.
        """
        state = self._state(database)
        rows: list[tuple[Any, ...]] = []
        params = {
            "after": after,
            "until": until,
            "namespace": namespace,
            "channels": list(channels),
            "limit": self.page_size,
        }
        with self.pools.cursor(database) as cursor:
            while True:
                page = cursor.execute(outbox.MESSAGES_FOR, params).fetchall()
                rows.extend(page)
                if len(page) < self.page_size:
                    break
                params["after"] = page[-1][0]
            (_epoch, pruned) = cursor.execute(outbox.STATE).fetchone() or ("", 0)
        if after < int(pruned):
            raise Resync("past the retention window")
        return [
            Replayed(position, state.token(position), channel, json.loads(text))
            for position, channel, _ns, _sid, text in rows
        ]

    def recent(
        self, database: str, channel: str, limit: int, *, namespace: str | None
    ) -> list[Replayed]:
        """The last *limit* messages delivered on *channel* of *database*
        for *namespace*, oldest first, read in one query.

        :raises DatabaseUnavailable: the database cannot be read, or its
            bridge is not connected.
        """
        state = self._state(database)
        params = {
            "channel": channel,
            "until": state.delivered,
            "namespace": namespace,
            "limit": limit,
        }
        with self.pools.cursor(database) as cursor:
            rows = cursor.execute(outbox.RECENT_ON, params).fetchall()
        return [
            Replayed(position, state.token(position), channel, json.loads(text))
            for position, _channel, _ns, _sid, text in rows
        ]

    def wait_messages(
        self, database: str, channel: str, since: Any, timeout: float
    ) -> list[Message]:
        """The messages published on *channel* of *database* after the
        position *since* (a client's ``position``), or, when there are none
        or *since* is not a position of this database, the next one, waited
        for up to *timeout* seconds: for long-polling handlers (see
        :meth:`oe_web_socketio.longpolling.LongPollingRequest.wait`).

        :raises TimeoutError: nothing came in time.
        :raises DatabaseUnavailable: the bridge of *database* is not
            connected, or the database cannot be read.
        """
        state = self._state(database)
        # Waiting before reading: what is delivered during the read wakes
        # the waiter, nothing falls in between.
        with self.deliverer.waiting(database, channel) as waiter:
            parsed = outbox.parse_position(since)
            until = state.delivered
            if parsed is not None and parsed[0] == state.epoch and parsed[1] < until:
                with self.pools.cursor(database) as cursor:
                    rows = cursor.execute(
                        outbox.MESSAGES_ON,
                        {
                            "after": parsed[1],
                            "until": until,
                            "channel": channel,
                            "limit": self.page_size,
                        },
                    ).fetchall()
                if rows:
                    return [
                        Message(
                            database,
                            row[0],
                            state.token(row[0]),
                            channel,
                            json.loads(row[4]),
                        )
                        for row in rows
                    ]
            try:
                return list(waiter.get(timeout=timeout))
            except gevent.Timeout:
                raise TimeoutError(f"no message on {channel!r}") from None

    def publish(self, address: Address, payload: Any) -> None:
        """Publish *payload* to *address* through the outbox of its
        database, in a transaction of its own (see :class:`Publisher`).

        :raises DatabaseUnavailable: the database cannot be written to.
        """
        if address.database not in self.feeds:
            raise DatabaseUnavailable(address.database, "not a database of this server")
        self.publisher.publish(address, payload)


def _consume(consumer: Consumer, database: str, payloads: list[str]) -> None:
    for payload in payloads:
        try:
            consumer(database, payload)
        except Exception:
            logger.exception("Error consuming a notification of %r", database)
