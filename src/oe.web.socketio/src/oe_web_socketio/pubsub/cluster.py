"""The workers of one cluster agree on their broker, or a newcomer refuses
to start.

Every worker (an oe_web_socketio process) of a cluster shares the first
database it serves; there, the unlogged table :data:`TABLE` has a row per
running worker: its instance id (new at each start), the broker it fans
out through (:func:`broker_identity`), its host and port, and when it was
last seen. A worker refreshes its row every :attr:`Membership.heartbeat`
seconds and deletes it when it stops; a row not refreshed for
:attr:`Membership.expiry` seconds is a dead worker's (killed, its machine
gone) and is deleted by the next worker that joins.

Invariants:

* a worker joins (:meth:`Membership.join`) only if every live row names
  the broker it uses (dead rows are deleted first, with the presence rows
  of their workers, :mod:`oe_web_socketio.pubsub.presence`); otherwise it
  raises :class:`ClusterMismatch`, a
  :class:`~oe_web_socketio.exceptions.UserError` whose message names both
  (the command line prints it and exits): a worker with ``broker =
  local`` beside ``postgresql`` ones, or a worker on another Redis, would
  silently miss their emits;
* with Redis, the broker's identity includes a random id kept in Redis
  (:data:`REDIS_KEY`), with the identity of the database the workers
  share: two clusters (two databases, or two copies of one) sharing one
  Redis, or the workers of one database on two Redis servers, refuse;
* a database out of reach when a worker starts does not stop it (it is
  logged, and the worker joins when the heartbeat reaches it): workers
  keep serving their own sockets whatever happens to the others.

Import this module after :func:`oe_web_socketio.patch.patch`.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from typing import Any

import gevent
import psycopg

from oe_web_socketio.exceptions import ClusterMismatch
from oe_web_socketio.listener import connect

logger = logging.getLogger(__name__)

#: The table of running workers.
TABLE = WORKER_TABLE = "oe_web_socketio_worker"

#: The table of who is present where (:mod:`oe_web_socketio.pubsub.presence`).
PRESENCE_TABLE = "oe_web_socketio_presence"

#: The Redis key naming its cluster: ``{"id": …, "database": …}``.
REDIS_KEY = "oe_web_socketio:cluster"

#: Key of the advisory lock workers take to join.
LOCK_KEY = 0x6F65_7773_636C  # "oewscl"

SCHEMA = f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (
    id text PRIMARY KEY,
    broker text NOT NULL,
    host text NOT NULL,
    port integer NOT NULL,
    started timestamptz NOT NULL DEFAULT now(),
    seen timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE IF NOT EXISTS {PRESENCE_TABLE} (
    worker text NOT NULL,
    namespace text NOT NULL,
    sid text NOT NULL,
    channel text NOT NULL,
    database text NOT NULL,
    uid text,
    login text,
    since timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (worker, namespace, sid, channel)
);
CREATE INDEX IF NOT EXISTS {PRESENCE_TABLE}_place
    ON {PRESENCE_TABLE} (namespace, database, channel)
"""

#: The identity of the database: its cluster's system identifier and name.
DATABASE_IDENTITY = (
    "SELECT system_identifier::text || '/' || current_database() "
    "FROM pg_control_system()"
)


class Membership:
    """This worker's row in :data:`TABLE`.

    :param conninfo: the connection string of the shared database.
    :param broker: :attr:`~oe_web_socketio.config.Config.broker`.
    :param broker_url: the Redis URL, for ``redis``.
    :param port: the port this worker listens on (to name it).
    """

    #: Seconds between two refreshes of this worker's row.
    heartbeat = 10.0
    #: Seconds after which a row not refreshed is a dead worker's.
    expiry = 30.0
    #: Seconds a connection may take to open.
    connect_timeout = 5

    def __init__(
        self, conninfo: str, broker: str, broker_url: str | None, port: int
    ) -> None:
        self.conninfo = conninfo
        self.broker = broker
        self.broker_url = broker_url
        self.port = port
        #: This worker's instance id.
        self.id = uuid.uuid4().hex
        #: Whether the row is written.
        self.joined = False
        self.identity: str | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._failing = False

    def join(self) -> None:
        """Check the running workers and write this worker's row, then
        refresh it in the background.

        :raises ClusterMismatch: they use another broker.
        """
        if self._greenlet is not None:
            return
        try:
            self._join()
        except psycopg.Error as exc:
            logger.warning(
                "Cannot check the other workers' broker now (%s): joining later",
                " ".join(str(exc).split()),
            )
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._beat)

    def leave(self) -> None:
        """Stop the heartbeat and delete this worker's row."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None
        if not self.joined:
            return
        try:
            with self._connect() as conn:
                conn.execute(f"DELETE FROM {TABLE} WHERE id = %s", (self.id,))
        except psycopg.Error as exc:
            logger.warning("Cannot delete this worker's row: %s", exc)
        self.joined = False

    def workers(self) -> list[dict[str, Any]]:
        """The live workers (for ``/health``), read now."""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT id, broker, host, port FROM {TABLE} "
                "WHERE seen >= now() - make_interval(secs => %s) ORDER BY started",
                (self.expiry,),
            ).fetchall()
        return [
            dict(zip(("id", "broker", "host", "port"), row, strict=True))
            for row in rows
        ]

    def state(self) -> dict[str, Any]:
        """What ``/health`` shows."""
        return {"id": self.id, "joined": self.joined, "broker": self.identity}

    # ---

    def _connect(self) -> psycopg.Connection:
        return connect(self.conninfo, "oe_web_socketio cluster", self.connect_timeout)

    def _join(self) -> None:
        with self._connect() as conn:
            if self.identity is None:
                self.identity = self._identity(conn)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                conn.execute(SCHEMA)
                conn.execute(
                    f"DELETE FROM {TABLE} "
                    "WHERE seen < now() - make_interval(secs => %s)",
                    (self.expiry,),
                )
                # The sockets of dead workers.
                conn.execute(
                    f"DELETE FROM {PRESENCE_TABLE} "
                    f"WHERE worker NOT IN (SELECT id FROM {TABLE}) AND worker <> %s",
                    (self.id,),
                )
                others = conn.execute(
                    f"SELECT DISTINCT broker, host, port FROM {TABLE} "
                    "WHERE broker <> %s AND id <> %s",
                    (self.identity, self.id),
                ).fetchall()
                if others:
                    broker, host, port = others[0]
                    raise ClusterMismatch(
                        f"this worker's broker is {self.identity!r}, but the "
                        f"worker at {host}:{port} (and {len(others) - 1} more) "
                        f"of the same database runs with {broker!r}: every "
                        "worker must have the same broker and broker_url "
                        "(stop them all to change it)"
                    )
                conn.execute(
                    f"INSERT INTO {TABLE} (id, broker, host, port) "
                    "VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET seen = now()",
                    (self.id, self.identity, socket.gethostname(), self.port),
                )
        self.joined = True

    def _identity(self, conn: psycopg.Connection) -> str:
        """:attr:`broker`, and for Redis the id of the cluster it serves."""
        if self.broker != "redis":
            return self.broker
        (database,) = conn.execute(DATABASE_IDENTITY).fetchone() or ("",)
        return f"redis:{self._redis_cluster(database)}"

    def _redis_cluster(self, database: str) -> str:
        """The id of the cluster the Redis at :attr:`broker_url` serves,
        set by the first worker.

        :raises ClusterMismatch: it serves the workers of another database.
        """
        import redis

        client = redis.Redis.from_url(str(self.broker_url), socket_connect_timeout=3)
        try:
            mine = json.dumps({"id": uuid.uuid4().hex, "database": database})
            client.set(REDIS_KEY, mine, nx=True)
            text = client.get(REDIS_KEY)
        except redis.RedisError as exc:
            raise psycopg.OperationalError(f"Redis: {exc}") from exc
        finally:
            client.close()
        cluster = json.loads(text or "{}")
        if cluster.get("database") != database:
            raise ClusterMismatch(
                f"the Redis at {self.broker_url} carries the emits of the "
                f"workers of another database ({cluster.get('database')!r}, "
                f"this one is {database!r}): give each cluster a Redis (or a "
                f"Redis database) of its own, or delete its key {REDIS_KEY!r}"
            )
        return str(cluster.get("id"))

    def _beat(self) -> None:
        while True:
            gevent.sleep(self.heartbeat)
            try:
                if self.joined:
                    with self._connect() as conn:
                        updated = conn.execute(
                            f"UPDATE {TABLE} SET seen = now() WHERE id = %s",
                            (self.id,),
                        ).rowcount
                    if not updated:
                        self.joined = False
                if not self.joined:
                    self._join()
                if self._failing:
                    self._failing = False
                    logger.info("This worker's row is written again")
            except ClusterMismatch as exc:
                if not self._failing:
                    self._failing = True
                    logger.error("%s", exc)
            except psycopg.Error as exc:
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "Cannot refresh this worker's row: %s",
                        " ".join(str(exc).split()),
                    )
