"""The PostgreSQL outbox's broker (the "database bridge"): messages
published in PostgreSQL, to sockets.

One :class:`OutboxBroker` serves every database of the server; for each it runs
a :class:`~oe_web_socketio.listener.Listener` on the channel
:data:`~oe_web_socketio.outbox.NOTIFY_CHANNEL` (and on the channels of
other consumers, such as Tryton's ``bus``). Rows are positioned when
their transaction commits (:mod:`oe_web_socketio.outbox`); when
notifications come, the bridge reads every row after the last one it
delivered, in one query for all the notifications that arrived together
(a page of :attr:`OutboxBroker.page_size` rows), and delivers them in position
order, in one pass (:class:`~oe_web_socketio.pubsub.deliver.Deliverer`):

* a row with a channel: the event ``message`` with the arguments
  ``(message, channel, position)`` to the sockets of the database
  subscribed to the channel, one emit per namespace (python-socketio
  encodes the packet once), and to the adapter queues of that channel
  (see :mod:`oe_web_socketio.adapter`);
* a row without one: ``(message, None, position)`` to every socket of the
  database (of its namespace, if it names one);
* a row with a socket id: ``(message, None, position)`` to that socket.

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

Invariants:

* a socket's rooms on the live path are those of its database and of its
  channels there (:mod:`oe_web_socketio.rooms`), which no client can
  name: messages of one database never reach the sockets of another;
* delivery of one batch, and the advance of :attr:`Outbox.delivered`,
  happen without yielding to another greenlet (what
  :mod:`oe_web_socketio.resume` relies on: a resuming socket misses
  nothing and gets nothing twice);
* a bad notification (not a transaction id), a notification whose rows
  are gone, or a row that cannot be delivered, is one log line and is
  skipped; the listener goes on;
* a notification costs the listener one round trip (the read), and no
  transaction; for an outbox created before rows were positioned at
  commit (:data:`~oe_web_socketio.outbox.POSITIONS_AT_COMMIT` false), the
  bridge positions them itself first, as it used to (a transaction of
  four more round trips), until the Tryton module is updated.

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

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.lock
import psycopg

from oe_web_socketio import outbox
from oe_web_socketio.adapter import Message
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.exceptions import DatabaseUnavailable, Resync
from oe_web_socketio.listener import Listener
from oe_web_socketio.pubsub import Address, Replayed
from oe_web_socketio.pubsub.deliver import Deliverer

if TYPE_CHECKING:
    import socketio

    from oe_web_socketio.pool import CursorPools
    from oe_web_socketio.pubsub import Listening

#: Its log lines keep the name of the module it was in.
logger = logging.getLogger("oe_web_socketio.bridge")

#: Transaction ids of delivered rows an :class:`Outbox` remembers, to
#: tell a notification whose rows were delivered by an earlier read from
#: one whose rows are gone without a query.
SEEN_XIDS = 4096

#: A consumer of another notification channel: called with the database
#: name and the payload of each notification, in order, in the listener's
#: greenlet (it must not block).
Consumer = Callable[[str, str], None]


class Outbox:
    """What the bridge knows of the outbox of one database.

    :ivar epoch: the epoch of the outbox, once the listener connected.
    :ivar delivered: the position of the last message delivered.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.epoch: str | None = None
        self.delivered = 0
        self.listener: Listener | None = None
        self.last_prune = float("-inf")
        #: Whether the absence of the outbox was logged.
        self.missing_reported = False
        #: Whether rows are positioned at commit; if not, by this server.
        self.positions_at_commit = True
        #: The transaction ids of the last rows delivered (an ordered set).
        self.seen_xids: dict[str, None] = {}
        self._progress = gevent.event.Event()

    def advance(self, position: int) -> None:
        """Record that every message up to *position* was delivered."""
        self.delivered = position
        progress, self._progress = self._progress, gevent.event.Event()
        progress.set()

    def saw(self, xid: str) -> None:
        """Remember that a row of transaction *xid* was delivered."""
        seen = self.seen_xids
        if xid not in seen:
            seen[xid] = None
            if len(seen) > SEEN_XIDS:
                del seen[next(iter(seen))]

    def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until *position* is delivered; return whether it is."""
        deadline = time.monotonic() + timeout
        while self.delivered < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    def token(self, position: int) -> str:
        """The position as clients see it."""
        assert self.epoch is not None
        return outbox.format_position(self.epoch, position)


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
        self.outboxes = {database: Outbox(database) for database in self.databases}
        #: Emits what is delivered to the sockets of this process.
        self.deliverer = Deliverer(server, directory)
        #: Writes what is published to the outboxes.
        self.publisher = Publisher(conninfo)

    @property
    def default_database(self) -> str | None:
        """The database of sockets that did not authenticate."""
        return self.databases[0] if self.databases else None

    # --- lifecycle

    def start(self) -> None:
        """Start a listener per database (they connect in the background)."""
        for database, state in self.outboxes.items():
            handlers: dict[str, Any] = {
                outbox.NOTIFY_CHANNEL: lambda conn, payloads, s=state: self._notified(
                    s, conn, payloads
                )
            }
            for channel, consumer in self.consumers.items():
                handlers[channel] = lambda conn, payloads, d=database, c=consumer: (
                    _consume(c, d, payloads)
                )
            state.listener = Listener(
                database,
                self.conninfo(database),
                handlers,
                on_connect=functools.partial(self._connected, state),
                on_idle=functools.partial(self._catch_up, state),
            )
            state.listener.start()

    def stop(self) -> None:
        """Stop the listeners and close the publishing connections."""
        for state in self.outboxes.values():
            if state.listener is not None:
                state.listener.stop()
        self.publisher.close()

    def counters(self) -> dict[str, Callable[[], Any]]:
        """``listeners``: :meth:`health`, for ``/health``."""
        return {"listeners": self.health}

    def health(self) -> dict[str, Any]:
        """The state of each database's listener and outbox, for /health."""
        return {
            database: {
                **(state.listener.health() if state.listener else {}),
                "delivered": state.delivered,
            }
            for database, state in self.outboxes.items()
        }

    # --- the listener's side

    def _connected(self, state: Outbox, conn: psycopg.Connection) -> None:
        """Catch up after a (re)connection: positions for what was
        committed meanwhile, then deliver what this server has not."""
        if self._find_outbox(state, conn):
            self._catch_up(state, conn)

    def _find_outbox(self, state: Outbox, conn: psycopg.Connection) -> bool:
        """Read the outbox's epoch; whether the database has an outbox.

        The server never creates it: the Tryton module ``web_socketio``
        does when it is activated (another host calls
        :func:`oe_web_socketio.outbox.ensure_schema`). Until then the
        listener serves the other channels (Tryton's bus) and looks again
        while idle.
        """
        (found,) = conn.execute(outbox.HAS_OUTBOX).fetchone() or (False,)
        if not found:
            if not state.missing_reported:
                state.missing_reported = True
                logger.warning(
                    "No outbox in %r: messages published in the database are "
                    "not delivered until it exists (activate the Tryton module "
                    "web_socketio)",
                    state.database,
                )
            return False
        epoch, _pruned = conn.execute(outbox.STATE).fetchone() or (None, 0)
        self._check_positions(state, conn)
        if epoch != state.epoch:
            # First connection, or the outbox was created anew: what is
            # already there is history, for resuming clients only.
            (last,) = conn.execute(outbox.LAST_DELIVERABLE).fetchone() or (0,)
            if state.epoch is not None:
                logger.warning(
                    "The outbox of %r was created anew: clients resync",
                    state.database,
                )
            state.epoch = epoch
            state.advance(last or 0)
            if state.missing_reported:
                logger.info("Found the outbox of %r", state.database)
        return True

    def _check_positions(self, state: Outbox, conn: psycopg.Connection) -> None:
        """Find out whether the outbox positions rows at commit; say it
        once when it does not, and when it starts to."""
        (at_commit,) = conn.execute(outbox.POSITIONS_AT_COMMIT).fetchone() or (False,)
        if at_commit == state.positions_at_commit:
            return
        state.positions_at_commit = at_commit
        if at_commit:
            logger.info("The outbox of %r positions messages at commit", state.database)
        else:
            logger.warning(
                "The outbox of %r does not position messages at commit: this "
                "server does, at a transaction per notification (update the "
                "Tryton module web_socketio)",
                state.database,
            )

    def _catch_up(self, state: Outbox, conn: psycopg.Connection) -> None:
        """Give positions to committed rows whose notification nobody
        handled (no server listened, or handling it failed), deliver what
        is new, prune when it is time. Run after each connection and
        while idle."""
        if state.epoch is None and not self._find_outbox(state, conn):
            return
        if not state.positions_at_commit:
            self._check_positions(state, conn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.LOCK_KEY,))
            missed = conn.execute(outbox.ASSIGN_MISSED_POSITIONS).rowcount
        if missed > 0:
            logger.info(
                "%d message(s) of %r committed without a notification handled",
                missed,
                state.database,
            )
        self._deliver_new(state, conn)
        self._maybe_prune(state, conn)

    def _notified(
        self, state: Outbox, conn: psycopg.Connection, payloads: list[str]
    ) -> None:
        """Deliver what the notifications that arrived together announce:
        one read for all of them (and, in an outbox without the trigger,
        one transaction to position their rows first)."""
        if state.epoch is None and not self._find_outbox(state, conn):
            return
        xids = outbox.xids(payloads)
        for payload in payloads:
            if not outbox.is_xid(payload):
                logger.warning(
                    "Ignored a notification on %r of %r that is not ours: %.80r",
                    outbox.NOTIFY_CHANNEL,
                    state.database,
                    payload,
                )
        if xids and not state.positions_at_commit:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.LOCK_KEY,))
                conn.execute(outbox.ASSIGN_POSITIONS, (xids,))
        self._deliver_new(state, conn)
        # A notified transaction's rows are committed, and positioned, by
        # now: unless they are gone, this read or an earlier one had them.
        pending = [xid for xid in xids if xid not in state.seen_xids]
        if pending:
            found = {
                row[0]
                for row in conn.execute(outbox.XIDS_WITH_ROWS, (pending,)).fetchall()
            }
            for xid in pending:
                if xid not in found:
                    logger.warning(
                        "No message of transaction %s in the outbox of %r "
                        "(deleted before delivery?)",
                        xid,
                        state.database,
                    )
        self._maybe_prune(state, conn)

    def _deliver_new(self, state: Outbox, conn: psycopg.Connection) -> None:
        """Deliver every positioned row after :attr:`Outbox.delivered`: one
        query, unless more than a page came."""
        while True:
            rows = conn.execute(
                outbox.NEW_MESSAGES, (state.delivered, self.page_size)
            ).fetchall()
            if not rows:
                return
            # From here to advance(), nothing yields.
            paths = self.deliverer.directory.paths()
            for row in rows:
                self._deliver(state, row, paths)
                state.saw(row[5])
            state.advance(rows[-1][0])
            if len(rows) < self.page_size:
                return

    def _deliver(self, state: Outbox, row: tuple[Any, ...], paths: list[str]) -> None:
        position, channel, namespace, sid, text = row[:5]
        try:
            payload = json.loads(text)
        except ValueError:
            logger.warning(
                "Skipped message %d of %r: not JSON", position, state.database
            )
            return
        self.deliverer.deliver(
            state.database,
            position,
            state.token(position),
            payload,
            channel=channel,
            namespace=namespace,
            sid=sid,
            paths=paths,
        )

    def _maybe_prune(self, state: Outbox, conn: psycopg.Connection) -> None:
        now = time.monotonic()
        if now - state.last_prune < self.prune_interval:
            return
        state.last_prune = now
        self.prune(state.database, conn)

    def prune(self, database: str, conn: psycopg.Connection) -> int:
        """Delete the messages of *database* older than
        :attr:`history_max_age` or beyond :attr:`history_max_count`;
        return the highest position deleted (0: none)."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.PRUNE_LOCK_KEY,))
            (through,) = conn.execute(
                outbox.PRUNE_THRESHOLD,
                (self.history_max_age, self.history_max_count),
            ).fetchone() or (None,)
            if not through or through <= 0:
                return 0
            conn.execute(outbox.PRUNE, {"through": through})
        logger.info("Pruned the outbox of %r through %d", database, through)
        return int(through)

    # --- the sockets' side

    def attach(self, socket: Listening) -> None:
        """Deliver the messages of its adapter's channel to *socket*."""
        self.deliverer.attach(socket)

    def detach(self, socket: Listening) -> None:
        """Stop delivering adapter messages to *socket*."""
        self.deliverer.detach(socket)

    # --- the resume's side (see :mod:`oe_web_socketio.resume`)

    def _state(self, database: str) -> Outbox:
        state = self.outboxes.get(database)
        if state is None or state.epoch is None:
            raise DatabaseUnavailable(database, "the database bridge is not connected")
        return state

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
        if address.database not in self.outboxes:
            raise DatabaseUnavailable(address.database, "not a database of this server")
        self.publisher.publish(address, payload)


class Publisher:
    """Publishes through the outboxes, on a connection per database kept
    open (opened again once if it broke).

    :param conninfo: the connection string of a database, by name.
    """

    def __init__(self, conninfo: Callable[[str], str]) -> None:
        self.conninfo = conninfo
        self._connections: dict[str, psycopg.Connection] = {}
        self._lock = gevent.lock.BoundedSemaphore()

    def publish(self, address: Address, payload: Any) -> None:
        """Publish *payload* to *address* in a transaction of its own (see
        :func:`oe_web_socketio.outbox.publish`).

        :raises DatabaseUnavailable: the database cannot be written to.
        """
        database = address.database
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection(database)
                try:
                    with conn.transaction():
                        outbox.publish(
                            conn.cursor(),
                            payload,
                            address.channel,
                            namespace=address.namespace,
                            sid=address.sid,
                        )
                    return
                except psycopg.OperationalError as exc:
                    conn.close()
                    self._connections.pop(database, None)
                    if attempt == 2:
                        raise DatabaseUnavailable(database, str(exc)) from exc

    def _connection(self, database: str) -> psycopg.Connection:
        conn = self._connections.get(database)
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(
                    self.conninfo(database),
                    autocommit=True,
                    application_name="oe_web_socketio publisher",
                    connect_timeout=10,
                )
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(database, str(exc)) from exc
            self._connections[database] = conn
        return conn

    def close(self) -> None:
        """Close the connections."""
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


def _consume(consumer: Consumer, database: str, payloads: list[str]) -> None:
    for payload in payloads:
        try:
            consumer(database, payload)
        except Exception:
            logger.exception("Error consuming a notification of %r", database)
