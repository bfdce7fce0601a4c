"""Publishing through the PostgreSQL outbox, from this server: a message
a socket publishes (:meth:`~oe_web_socketio.namespace.Namespace.publish`)
is written to the outbox of its database in a transaction of its own,
and reaches the sockets of every server of that database as any other
message committed there does.

Invariant: one transaction per message, on a connection per database kept
open; a broken connection is opened again once before the publish is
refused with :class:`~oe_web_socketio.exceptions.DatabaseUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent.lock
import psycopg

from oe_web_socketio import outbox
from oe_web_socketio.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from oe_web_socketio.pubsub import Address


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
