"""Presence: who is connected, in a database or on a channel, across every
worker of the cluster.

A namespace whose :attr:`~oe_web_socketio.namespace.Namespace.track_presence`
is on records each of its sockets here when it connects (in its
database: the channel ``None``) and when it subscribes to a channel, and
forgets it when it unsubscribes or disconnects;
:meth:`~oe_web_socketio.namespace.Namespace.presence` lists who is there
(the client's ``presence`` event too), and the namespace tells the
others of each arrival and departure (the ``presence`` event, see the
README). A :class:`Presence` store is one of:

* :class:`DatabasePresence`: the unlogged table
  :data:`~oe_web_socketio.pubsub.cluster.PRESENCE_TABLE` of the shared
  database, one row per socket and channel, keyed by the worker's
  instance id (:class:`~oe_web_socketio.pubsub.cluster.Membership`):
  whatever the broker (PostgreSQL or Redis), since every worker of a
  Tryton cluster shares that database anyway and presence changes at the
  rate of connections, not of emits. A worker's rows count only while its
  row in the table of workers is fresh: a killed worker's sockets vanish
  from the lists within :attr:`~oe_web_socketio.pubsub.cluster.Membership.expiry`
  seconds, and its rows are deleted when the next worker joins (a worker
  that restarts has a new id);
* :class:`LocalPresence`: one process's memory (a host without a
  database).

Invariants:

* recording never fails a client's connection or subscription: a store
  out of reach is logged (once per failure streak) and the socket is
  simply missing from the lists until it subscribes again;
* listing a store out of reach raises
  :class:`~oe_web_socketio.exceptions.DatabaseUnavailable` (the client is
  told ``unavailable``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

import gevent.lock
import psycopg

from oe_web_socketio.exceptions import DatabaseUnavailable
from oe_web_socketio.listener import connect
from oe_web_socketio.pubsub.cluster import PRESENCE_TABLE, WORKER_TABLE

logger = logging.getLogger(__name__)

#: The channel of a socket's presence in its database.
DATABASE = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Present:
    """A socket present somewhere: its namespace's sid, its user."""

    sid: str
    uid: int | str | None
    login: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"sid": self.sid, "uid": self.uid, "login": self.login}


class Presence(Protocol):
    """Where presence is kept."""

    def enter(
        self, namespace: str, database: str, channel: str, present: Present
    ) -> None:
        """Record *present* on *channel* (:data:`DATABASE`: the database)."""

    def leave(self, namespace: str, sid: str, channel: str | None) -> None:
        """Forget *sid* on *channel* (``None``: everywhere)."""

    def members(self, namespace: str, database: str, channel: str) -> list[Present]:
        """Who is present on *channel* of *database*, in *namespace*, in
        the order they came.

        :raises DatabaseUnavailable: the store cannot be read.
        """


class LocalPresence:
    """Presence in this process's memory."""

    def __init__(self) -> None:
        self._places: dict[tuple[str, str, str], dict[str, Present]] = {}

    def enter(
        self, namespace: str, database: str, channel: str, present: Present
    ) -> None:
        self._places.setdefault((namespace, database, channel), {})[present.sid] = (
            present
        )

    def leave(self, namespace: str, sid: str, channel: str | None) -> None:
        for (path, _database, place), members in list(self._places.items()):
            if path == namespace and (channel is None or channel == place):
                members.pop(sid, None)
                if not members:
                    del self._places[path, _database, place]

    def members(self, namespace: str, database: str, channel: str) -> list[Present]:
        return list(self._places.get((namespace, database, channel), {}).values())


class DatabasePresence:
    """Presence in the shared database.

    :param conninfo: its connection string.
    :param worker: this worker's instance id.
    :param expiry: seconds after which a worker not seen is dead.
    """

    connect_timeout = 3

    def __init__(self, conninfo: str, worker: str, expiry: float) -> None:
        self.conninfo = conninfo
        self.worker = worker
        self.expiry = expiry
        self._connection: psycopg.Connection | None = None
        self._lock = gevent.lock.BoundedSemaphore()
        self._failing = False

    def enter(
        self, namespace: str, database: str, channel: str, present: Present
    ) -> None:
        self._write(
            f"INSERT INTO {PRESENCE_TABLE} "
            "(worker, namespace, sid, database, channel, uid, login) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                self.worker,
                namespace,
                present.sid,
                database,
                channel,
                None if present.uid is None else str(present.uid),
                present.login,
            ),
        )

    def leave(self, namespace: str, sid: str, channel: str | None) -> None:
        if channel is None:
            self._write(
                f"DELETE FROM {PRESENCE_TABLE} "
                "WHERE worker = %s AND namespace = %s AND sid = %s",
                (self.worker, namespace, sid),
            )
        else:
            self._write(
                f"DELETE FROM {PRESENCE_TABLE} WHERE worker = %s "
                "AND namespace = %s AND sid = %s AND channel = %s",
                (self.worker, namespace, sid, channel),
            )

    def members(self, namespace: str, database: str, channel: str) -> list[Present]:
        try:
            rows = self._execute(
                f"SELECT p.sid, p.uid, p.login FROM {PRESENCE_TABLE} p "
                f"JOIN {WORKER_TABLE} w ON w.id = p.worker "
                "WHERE p.namespace = %s AND p.database = %s AND p.channel = %s "
                "AND w.seen >= now() - make_interval(secs => %s) "
                "ORDER BY p.since, p.sid",
                (namespace, database, channel, self.expiry),
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailable(database, f"presence: {exc}") from exc
        return [Present(sid, _uid(uid), login) for sid, uid, login in rows]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _write(self, query: str, params: tuple[Any, ...]) -> None:
        try:
            self._execute(query, params)
        except psycopg.Error as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "Cannot record presence (%s): sockets are missing from "
                    "the lists until it is back",
                    " ".join(str(exc).split()),
                )
        else:
            if self._failing:
                self._failing = False
                logger.info("Recording presence again")

    def _execute(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection
            if conn is None or conn.closed:
                conn = self._connection = connect(
                    self.conninfo, "oe_web_socketio presence", self.connect_timeout
                )
            try:
                cursor = conn.execute(query, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                conn.close()
                self._connection = None
                raise


def _uid(text: str | None) -> int | str | None:
    """A uid as the host gave it: Tryton's are integers."""
    if text is not None and text.isdigit():
        return int(text)
    return text
