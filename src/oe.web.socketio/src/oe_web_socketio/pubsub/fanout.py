"""Fan-out of ephemeral emits across workers: python-socketio's client
managers.

Several oe_web_socketio processes (workers, on one machine or several)
that share a database behave as one server for what crosses sockets:
every emit of python-socketio (the namespace helpers ``emit``, ``send``,
``broadcast``, ``broadcast_channel``, ``send_and_broadcast*``, ``error``;
a room; a socket id held by another worker; ``disconnect``) goes through
a :class:`socketio.PubSubManager`, which emits it to this worker's
sockets and publishes it to the others, which emit it to theirs. The
manager is chosen by :attr:`~oe_web_socketio.config.Config.broker`
(:func:`client_manager`):

* ``local``: python-socketio's own :class:`socketio.Manager`, one
  process, no round trip (the default of the egg);
* ``postgresql``: :class:`PostgresManager`, ``NOTIFY`` on the channel
  :data:`CHANNEL` of the server's first database, received by a
  :class:`~oe_web_socketio.listener.Listener` (``LISTEN``); nothing new
  to run;
* ``redis``: python-socketio's :class:`socketio.RedisManager`
  (:class:`RedisManager`, with counters), at
  :attr:`~oe_web_socketio.config.Config.broker_url`.

Invariants:

* messages between workers are JSON (python-socketio's ``PubSubManager``
  format), never pickle: a peer can only make a worker emit;
* an emit reaches this worker's sockets at once, before it is published:
  a worker that cannot reach its peers never stops serving its own
  clients; what it could not publish is counted (``errors``) and logged
  once per failure streak, and the peers miss it (ephemeral emits are not
  kept, see :mod:`oe_web_socketio.pubsub` for durable messages);
* an emit never waits for PostgreSQL: :class:`PostgresManager` queues
  it, and one greenlet sends what waits, in order, in one round trip (a
  pipeline of ``NOTIFY`` statements); while the backend is unreachable
  nothing is tried again before :attr:`PostgresManager.retry_after`
  seconds, what waits is dropped (counted), and at most
  :attr:`PostgresManager.max_outgoing` messages wait;
* a worker publishes only while another listens (:attr:`PostgresManager.peers`:
  other listeners of the database, counted when it connects and while
  idle, and any notification of another worker): a lone worker pays no
  round trip per emit; a worker that starts says hello (a notification
  the others read as "publish from now on");
* a ``NOTIFY`` payload is at most :data:`NOTIFY_LIMIT` bytes: a larger
  message is written to the unlogged table :data:`SPILL_TABLE` and the
  notification carries its key (:data:`SPILL_PREFIX` and the row id), in
  the same transaction, so the receivers read it once the notification
  comes; rows older than :data:`SPILL_MAX_AGE` seconds are deleted. An
  emit of any size (up to what Engine.IO accepts) thus crosses workers,
  in order with the others;
* durable messages (the outbox) are read by every worker from the
  database and emitted with ``ignore_queue`` (see
  :mod:`oe_web_socketio.pubsub.deliver`): never through the manager, or
  each would arrive once per worker.

Import this module after :func:`oe_web_socketio.patch.patch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.queue
import psycopg
import socketio

from oe_web_socketio.exceptions import ConfigError
from oe_web_socketio.listener import Listener, State, connect

logger = logging.getLogger(__name__)

#: The ``LISTEN``/``NOTIFY`` channel of :class:`PostgresManager`.
CHANNEL = "oe_web_socketio_fanout"

#: The largest ``NOTIFY`` payload PostgreSQL accepts is 8000 bytes (less
#: one); a message above this many bytes goes through :data:`SPILL_TABLE`.
NOTIFY_LIMIT = 7900

#: The ``application_name`` of the listeners' connections: how a worker
#: counts its peers (:data:`PEERS`).
LISTENER_NAME = "oe_web_socketio fan-out listener"

#: How many other workers listen in the database.
PEERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name = %s AND pid <> pg_backend_pid()"
)

#: The unlogged table of the messages too large for a notification.
SPILL_TABLE = "oe_web_socketio_fanout_spill"

#: What starts a notification that names a row of :data:`SPILL_TABLE`
#: (a message of python-socketio is a JSON object: ``{``).
SPILL_PREFIX = "#"

#: Seconds a row of :data:`SPILL_TABLE` is kept: every listening worker
#: has read it long before (a worker that was not listening then missed
#: the notification anyway).
SPILL_MAX_AGE = 300.0

#: Creates :data:`SPILL_TABLE` (idempotent; under an advisory lock, as
#: two workers starting together would otherwise race on the catalog).
SPILL_SCHEMA = f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {SPILL_TABLE} (
    id bigserial PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT clock_timestamp(),
    message text NOT NULL
)
"""

#: A notification (a statement of its own: its own transaction).
NOTIFY = "SELECT pg_notify(%s, %s)"

#: A message written to :data:`SPILL_TABLE`, and the notification of its
#: key, in one statement.
SPILL = (
    f"WITH spilled AS (INSERT INTO {SPILL_TABLE} (message) VALUES (%s) "
    "RETURNING id) SELECT pg_notify(%s, %s || id) FROM spilled"
)

#: The advisory lock key taken around :data:`SPILL_SCHEMA`.
SCHEMA_LOCK_KEY = 0x6F65_7773_6673  # "oewsfs"


class Counting:
    """What a manager counts, for ``/health`` and metrics
    (:meth:`counters`)."""

    def __init__(self) -> None:
        #: Messages published to the peers.
        self.published = 0
        #: Messages received from the backend (PostgreSQL: from the other
        #: workers only; Redis: this worker's own too).
        self.received = 0
        #: Messages that could not be published (the peers missed them).
        self.errors = 0
        #: The last error, as a line of text.
        self.last_error: str | None = None
        self._failing = False

    def _failed(self, backend: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = " ".join(str(exc).split()) or type(exc).__name__
        if not self._failing:
            self._failing = True
            logger.warning(
                "Cannot publish to the other workers through %s (%s): they "
                "miss this worker's emits until it is back",
                backend,
                self.last_error,
            )

    def _succeeded(self, backend: str) -> None:
        self.published += 1
        if self._failing:
            self._failing = False
            logger.info("Publishing to the other workers through %s again", backend)

    def state(self) -> dict[str, Any]:
        """The manager's counters."""
        return {
            "published": self.published,
            "received": self.received,
            "errors": self.errors,
            "last_error": self.last_error,
        }


class PostgresManager(Counting, socketio.PubSubManager):
    """python-socketio's client manager over PostgreSQL ``NOTIFY``.

    :param database: the database the workers share (for messages).
    :param conninfo: its libpq connection string.
    :param channel: the ``NOTIFY`` channel; the same in every worker.
    """

    name = "postgresql"

    #: Seconds a publish is not tried again after a failure.
    retry_after = 1.0
    #: Seconds a publishing connection may take to open.
    connect_timeout = 3
    #: Most messages sent in one round trip.
    batch = 100
    #: Most messages waiting to be sent; more are not published (counted).
    max_outgoing = 10_000

    def __init__(self, database: str, conninfo: str, *, channel: str = CHANNEL) -> None:
        Counting.__init__(self)
        socketio.PubSubManager.__init__(self, channel=channel, logger=logger)
        self.database = database
        self.conninfo = conninfo
        #: Messages too large for a notification (see :data:`SPILL_TABLE`).
        self.spilled = 0
        #: Whether another worker listens: a lone worker publishes nothing.
        self.peers = False
        self.listener = Listener(
            database,
            conninfo,
            {channel: self._notified},
            on_connect=self._connected,
            on_idle=self._idle,
            application_name=LISTENER_NAME,
        )
        self._queue: gevent.queue.Queue[str] = gevent.queue.Queue()
        self._own_suffix = f'"host_id": "{self.host_id}"}}'
        self._connection: psycopg.Connection | None = None
        #: What waits to be sent (:meth:`_send_waiting`).
        self._outgoing: gevent.queue.Queue[str] = gevent.queue.Queue()
        self._sender: gevent.Greenlet | None = None
        self._sequence = 0
        self._retry_at = 0.0
        self._last_prune = 0.0

    def initialize(self) -> None:
        # PubSubManager's: its _thread reads _listen(), which the listener
        # feeds.
        super().initialize()
        if not self.write_only:
            self.listener.start()

    def stop(self) -> None:
        """Stop listening and sending, close the publishing connection."""
        self.listener.stop()
        if self._sender is not None:
            self._sender.kill(block=True, timeout=2)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def state(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            **self.listener.health(),
            **super().state(),
            "spilled": self.spilled,
            "peers": self.peers,
        }

    @property
    def connected(self) -> bool:
        """Whether the listener listens now."""
        return self.listener.state is State.LISTENING

    # --- publishing

    def _publish(self, data: Any) -> None:
        if not self.peers:
            # Nobody else listens (checked at each connection and while
            # idle; a worker that starts says hello at once).
            return
        if time.monotonic() < self._retry_at:
            self._failed("PostgreSQL", ConnectionError("not reconnected yet"))
            return
        if self._outgoing.qsize() >= self.max_outgoing:
            self._failed("PostgreSQL", ConnectionError("too many emits waiting"))
            return
        # The emitting greenlet does not wait for PostgreSQL: the sender
        # sends what waits, in order, in one round trip.
        # A number of its own: PostgreSQL drops a notification identical to
        # another of the same transaction (one pipeline), and two emits may
        # be identical.
        self._sequence += 1
        self._outgoing.put(self.json.dumps({"seq": self._sequence, **data}))
        if self._sender is None:
            self._sender = gevent.spawn(self._send_waiting)

    def _send_waiting(self) -> None:
        """The sender's loop: every message waiting, in one pipeline."""
        while True:
            texts = [self._outgoing.get()]
            while not self._outgoing.empty() and len(texts) < self.batch:
                texts.append(self._outgoing.get())
            try:
                self._send(texts)
            except psycopg.Error as exc:
                self._retry_at = time.monotonic() + self.retry_after
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                for _text in texts:
                    self._failed("PostgreSQL", exc)
                # What waits behind them would wait for a dead server too.
                while not self._outgoing.empty():
                    self._outgoing.get()
                    self._failed("PostgreSQL", exc)
            else:
                for _text in texts:
                    self._succeeded("PostgreSQL")

    def _send(self, texts: list[str]) -> None:
        conn = self._connection
        if conn is None or conn.closed:
            conn = self._connection = connect(
                self.conninfo,
                "oe_web_socketio fan-out publisher",
                self.connect_timeout,
            )
        if len(texts) == 1 and len(texts[0].encode()) <= NOTIFY_LIMIT:
            conn.execute(NOTIFY, (self.channel, texts[0]))
            return
        with conn.pipeline():
            for text in texts:
                if len(text.encode()) <= NOTIFY_LIMIT:
                    conn.execute(NOTIFY, (self.channel, text))
                else:
                    # One statement, one transaction: the notification goes
                    # out at its commit, when the row is there to read.
                    conn.execute(SPILL, (text, self.channel, SPILL_PREFIX))
                    self.spilled += 1

    # --- receiving (the listener's greenlet)

    def _notified(self, conn: psycopg.Connection, payloads: list[str]) -> None:
        if not self.peers and any(self.host_id not in p for p in payloads):
            self.peers = True
        # This worker's own messages come back too: python-socketio would
        # decode each to drop it. They end with its host_id (the last key
        # of what PubSubManager publishes, but for callbacks, which name
        # the worker they go to and do not end so).
        payloads = [p for p in payloads if not p.endswith(self._own_suffix)]
        spilled = [
            int(p[1:]) for p in payloads if p[:1] == SPILL_PREFIX and p[1:].isdigit()
        ]
        large: dict[int, str] = {}
        if spilled:
            large = dict(
                conn.execute(
                    f"SELECT id, message FROM {SPILL_TABLE} WHERE id = ANY(%s)",
                    (spilled,),
                ).fetchall()
            )
        for payload in payloads:
            text: str | None = payload
            if payload[:1] == SPILL_PREFIX:
                text = large.get(int(payload[1:])) if payload[1:].isdigit() else None
                if text is None:
                    logger.warning("A large fan-out message is gone: %.40r", payload)
                    continue
            self.received += 1
            self._queue.put(text)

    def _listen(self) -> Iterator[str]:
        """What PubSubManager's thread reads: the messages, in the order of
        their notifications."""
        while True:
            yield self._queue.get()

    def _connected(self, conn: psycopg.Connection) -> None:
        """Once listening: create the spill table, count the peers, and
        say hello, so that they publish to this worker from now on."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            conn.execute(SPILL_SCHEMA)
        self._count_peers(conn)
        hello = self.json.dumps({"method": "hello", "host_id": self.host_id})
        conn.execute("SELECT pg_notify(%s, %s)", (self.channel, hello))

    def _count_peers(self, conn: psycopg.Connection) -> None:
        row = conn.execute(PEERS, (LISTENER_NAME,)).fetchone()
        self.peers = bool(row and row[0])

    def _idle(self, conn: psycopg.Connection) -> None:
        self._count_peers(conn)
        self._prune(conn)

    def _prune(self, conn: psycopg.Connection) -> None:
        now = time.monotonic()
        if now - self._last_prune < SPILL_MAX_AGE / 2:
            return
        self._last_prune = now
        conn.execute(
            f"DELETE FROM {SPILL_TABLE} "
            "WHERE created < clock_timestamp() - make_interval(secs => %s)",
            (SPILL_MAX_AGE,),
        )


class RedisManager(Counting, socketio.RedisManager):
    """python-socketio's Redis manager, counted, and quiet while Redis is
    away (one line per failure streak, a publish not tried again before
    :attr:`retry_after` seconds).

    :param url: ``redis://host:port/db``.
    :param channel: the Redis channel; the same in every worker.
    """

    retry_after = 1.0

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        Counting.__init__(self)
        socketio.RedisManager.__init__(
            self,
            url,
            channel=channel,
            logger=logger,
            redis_options={"socket_connect_timeout": 3, "health_check_interval": 15},
        )
        self._retry_at = 0.0
        #: python-socketio's: whether the publishing connection is open.
        self.connected: bool = False

    def _publish(self, data: Any) -> None:
        if time.monotonic() < self._retry_at:
            self._failed("Redis", ConnectionError("not reconnected yet"))
            return
        try:
            if not self.connected:
                self._redis_connect()
            self.redis.publish(self.channel, self.json.dumps(data))
        except Exception as exc:  # noqa: BLE001 - redis.RedisError, OSError: counted
            self.connected = False
            self._retry_at = time.monotonic() + self.retry_after
            self._failed("Redis", exc)
        else:
            self._succeeded("Redis")

    def _listen(self) -> Iterator[Any]:
        for message in super()._listen():
            self.received += 1
            # Text for the server's JSON module (protocol.Packet's), which
            # reads no bytes.
            yield message.decode() if isinstance(message, bytes) else message

    def stop(self) -> None:
        """Close the connections to Redis."""
        if self.pubsub is not None:
            self.pubsub.close()
        if self.redis is not None:
            self.redis.close()

    def state(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.redis_url, **super().state()}


def client_manager(
    broker: str, *, database: str | None, conninfo: str | None, url: str | None
) -> socketio.Manager:
    """The client manager of the :attr:`~oe_web_socketio.config.Config.broker`
    *broker*.

    :param database: the database the workers share, and *conninfo* its
        connection string (``postgresql``).
    :param url: the Redis URL (``redis``).
    :raises ConfigError: *broker* needs what is not given.
    """
    if broker == "postgresql":
        if database is None or conninfo is None:
            raise ConfigError(
                "broker = postgresql needs a database (a Tryton host)", key="broker"
            )
        return PostgresManager(database, conninfo)
    if broker == "redis":
        if not url:
            raise ConfigError("broker = redis needs broker_url", key="broker_url")
        return RedisManager(url)
    return socketio.Manager()


def manager_state(manager: socketio.Manager) -> dict[str, Any]:
    """The counters of *manager* (``{"backend": "local"}`` for python-socketio's
    own)."""
    if isinstance(manager, Counting):
        return manager.state()
    return {"backend": "local"}


def stop_manager(manager: socketio.Manager) -> None:
    """Release the connections of *manager*, if it has any."""
    if isinstance(manager, PostgresManager | RedisManager):
        manager.stop()
        gevent.sleep(0)
