"""The read-only cursor pool: a few PostgreSQL connections per database.

The server reads the host application's database (sessions, later records)
but never writes to it: the host does. :class:`CursorPools` keeps one
:class:`psycopg_pool.ConnectionPool` per database and lends cursors of it
with :meth:`CursorPools.cursor`.

Invariants:

* at most ``max_cursor`` connections per database exist, hence at most as
  many cursors are in use at once; further callers wait, served first come
  first served (psycopg_pool gives each waiter its own condition, in a
  queue: waiting costs no CPU), and give up after ``timeout`` seconds with
  :class:`~oe_web_socketio.exceptions.PoolTimeout`;
* every transaction is read-only (``BEGIN READ ONLY``, and the session's
  ``default_transaction_read_only`` for statements run in autocommit), and
  is rolled back when the ``with`` block ends, whatever happened in it;
* a connection found broken (the server restarted, an administrator
  terminated its backend) is discarded and replaced, before it is lent
  (psycopg_pool's ``check``) or when it is returned;
* the database being out of reach surfaces as
  :class:`~oe_web_socketio.exceptions.DatabaseUnavailable`, never as a
  psycopg error;
* pools are created on first use of a database, so a database that is down
  when the server starts does not stop it.

Caveats:

* Import this module after :func:`oe_web_socketio.patch.patch`: psycopg_pool
  works with :mod:`threading` and :mod:`queue`, which the patch makes
  cooperative (its workers become greenlets). Unpatched, in tests for
  instance, it works the same with threads.
* While a database is out of reach, a caller waits ``timeout`` seconds
  before it gets :class:`DatabaseUnavailable`: psycopg_pool connects in a
  background worker, with exponential backoff, while callers wait for a
  connection. The cause of each failed attempt is logged by psycopg_pool
  (logger ``psycopg.pool``, pool named ``oe_web_socketio/<database>``).
* Do not interrupt a caller waiting in :meth:`CursorPools.cursor` with an
  exception that is not an :class:`Exception` (``gevent.Timeout``,
  ``Greenlet.kill()``): psycopg_pool 3.3 cleans up after a waiter only for
  :class:`Exception`; after a :class:`BaseException` the connection handed
  later to the gone waiter is lost for good. Bound the wait with the
  pool's own ``timeout`` instead.
* Read-only is a guard against mistakes, not a security boundary: a role
  with SELECT privileges only is one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self

import psycopg
import psycopg_pool

from oe_web_socketio.exceptions import DatabaseUnavailable, PoolTimeout

logger = logging.getLogger(__name__)

#: How the pools name their connections in ``pg_stat_activity``.
APPLICATION_NAME = "oe_web_socketio"


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool of one database."""

    #: Connections lent and not yet returned.
    in_use: int
    #: Connections open and ready to be lent.
    idle: int
    #: Callers waiting for a connection.
    waiting: int


class CursorPools:
    """Read-only cursors on several databases, at most *max_cursor* at once
    per database.

    :param uris: the libpq connection string (URI or ``key=value``) of each
        database: a mapping from database name, or a function of the name.
        Only names found there can be used: callers must not pass names
        that clients chose without checking them, since each name costs a
        pool.
    :param max_cursor: most connections (hence cursors) per database.
    :param timeout: seconds a caller waits for a free connection.
    :param application_name: the ``application_name`` of the connections,
        as ``pg_stat_activity`` shows it; it overrides one in *uris*.
    """

    #: Connections kept open per database even when idle, so the first
    #: query after a quiet period does not pay for a connection.
    min_size = 1
    #: Seconds an idle connection above :attr:`min_size` is kept.
    max_idle = 10 * 60.0
    #: Seconds after which a connection is replaced by a fresh one (some
    #: jitter applies), so that server-side memory does not grow forever.
    max_lifetime = 60 * 60.0
    #: Seconds psycopg_pool keeps retrying to open a connection in the
    #: background before it gives up; the next caller starts a new round.
    #: Short, because the retry delay doubles each time: a long round could
    #: leave the pool asleep well after the database is back.
    reconnect_timeout = 30.0
    #: Background workers per pool (greenlets once patched): they open,
    #: check and close connections, never run the callers' queries.
    num_workers = 2
    #: Seconds :meth:`close` waits for each pool's workers to stop.
    close_timeout = 5.0

    def __init__(
        self,
        uris: Mapping[str, str] | Callable[[str], str],
        max_cursor: int,
        timeout: float,
        application_name: str = APPLICATION_NAME,
    ) -> None:
        if max_cursor < 1:
            raise ValueError(f"max_cursor must be at least 1, got {max_cursor}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._uris = uris
        self.max_cursor = max_cursor
        self.timeout = timeout
        self.application_name = application_name
        self._pools: dict[str, psycopg_pool.ConnectionPool] = {}
        self._in_use: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def cursor(self, database: str) -> Iterator[psycopg.Cursor[Any]]:
        """Lend a cursor on *database* for the ``with`` block.

        The block runs in a read-only transaction, rolled back at its end.
        Do not keep the cursor or its connection beyond the block.

        :raises KeyError: *uris* is a mapping without *database*.
        :raises PoolTimeout: every connection stayed in use for
            :attr:`timeout` seconds.
        :raises DatabaseUnavailable: no connection could be opened within
            :attr:`timeout` seconds, the connection broke during the block,
            or the pools are closed.
        """
        pool = self._pool(database)
        conn = self._getconn(database, pool)
        try:
            with conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as exc:
            if conn.broken:
                raise DatabaseUnavailable(
                    database, f"connection lost: {exc}".strip()
                ) from exc
            raise
        finally:
            self._putconn(database, pool, conn)

    def stats(self, database: str) -> PoolStats:
        """How many connections to *database* are in use, idle, awaited."""
        with self._lock:
            pool = self._pools.get(database)
            in_use = self._in_use.get(database, 0)
        if pool is None:
            return PoolStats(in_use=0, idle=0, waiting=0)
        measures = pool.get_stats()
        return PoolStats(
            in_use=in_use,
            idle=measures.get("pool_available", 0),
            waiting=measures.get("requests_waiting", 0),
        )

    def all_stats(self) -> dict[str, dict[str, int]]:
        """:meth:`stats` of each database a cursor was asked for, for
        ``/health``."""
        with self._lock:
            databases = list(self._pools)
        return {
            database: dataclasses.asdict(self.stats(database)) for database in databases
        }

    def close(self) -> None:
        """Close every pool: idle connections now, lent ones when returned.

        Callers waiting for a connection, and later ones, get
        :class:`DatabaseUnavailable`. Idempotent.
        """
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.close(timeout=self.close_timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _pool(self, database: str) -> psycopg_pool.ConnectionPool:
        with self._lock:
            if self._closed:
                raise DatabaseUnavailable(database, "the pool is closed")
            pool = self._pools.get(database)
            if pool is None:
                conninfo = (
                    self._uris[database]
                    if isinstance(self._uris, Mapping)
                    else self._uris(database)
                )
                pool = self._new_pool(database, conninfo)
                # Opening starts the workers and the first connection in
                # the background: it does not wait for the database.
                pool.open()
                self._pools[database] = pool
                self._in_use[database] = 0
            return pool

    def _new_pool(self, database: str, conninfo: str) -> psycopg_pool.ConnectionPool:
        return psycopg_pool.ConnectionPool(
            conninfo,
            kwargs={"application_name": self.application_name},
            min_size=min(self.min_size, self.max_cursor),
            max_size=self.max_cursor,
            open=False,
            configure=_configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            name=f"{APPLICATION_NAME}/{database}",
            timeout=self.timeout,
            max_idle=self.max_idle,
            max_lifetime=self.max_lifetime,
            reconnect_timeout=self.reconnect_timeout,
            num_workers=self.num_workers,
        )

    def _getconn(
        self, database: str, pool: psycopg_pool.ConnectionPool
    ) -> psycopg.Connection:
        try:
            conn = pool.getconn(timeout=self.timeout)
        except psycopg_pool.PoolTimeout as exc:
            with self._lock:
                busy = self._in_use[database] >= self.max_cursor
            if busy:
                raise PoolTimeout(database, self.timeout) from exc
            # Room in the pool, yet no connection: opening one failed (or
            # was too slow) all along; psycopg_pool logged why.
            raise DatabaseUnavailable(
                database,
                f"no connection could be opened within {self.timeout:g} s "
                "(see the psycopg.pool log)",
            ) from exc
        except psycopg_pool.PoolClosed as exc:
            raise DatabaseUnavailable(database, "the pool is closed") from exc
        with self._lock:
            self._in_use[database] += 1
        return conn

    def _putconn(
        self, database: str, pool: psycopg_pool.ConnectionPool, conn: psycopg.Connection
    ) -> None:
        try:
            # Ends the read-only transaction; a no-op (no round trip) when
            # none is open. The pool would do it too, with a warning each time.
            if not conn.closed:
                conn.rollback()
                # Undo what the caller may have changed, for the next one.
                conn.autocommit = False
                conn.read_only = True
        except psycopg.Error as exc:
            # Broken, or interrupted in the middle of a query: unusable. The
            # pool replaces a closed connection when it is returned.
            logger.info("Discarding a connection to %r: %s", database, exc)
            conn.close()
        finally:
            with self._lock:
                self._in_use[database] -= 1
            pool.putconn(conn)


def _configure(conn: psycopg.Connection) -> None:
    """Make a new connection of the pool read-only (psycopg_pool's
    ``configure``: it must leave the connection idle)."""
    conn.autocommit = True
    conn.execute("SET default_transaction_read_only = on")
    conn.autocommit = False
    conn.read_only = True
