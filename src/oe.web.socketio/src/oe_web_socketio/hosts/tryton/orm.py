"""trytond's models inside the gevent server: read-only transactions on a
bounded, fair budget of cursors.

:class:`TrytonORM` imports trytond into this process, initialises the
model pool of a database on first use, and runs code in a read-only
:class:`trytond.transaction.Transaction` as a user, with the user's
preferences as context and access rights checked (``_check_access``), as
trytond's own RPC layer does. Long-polling handlers
(:mod:`oe_web_socketio.longpolling`) reach models through it.

How trytond 8.0 runs here:

* Order of imports: :func:`oe_web_socketio.patch.patch` (gevent's
  ``patch_all``, run first by the command line) must precede the import of
  trytond, which :meth:`TrytonORM.load` does. trytond creates its
  ``threading.local`` objects (the transaction stack, the pool instances)
  at import: once patched they are gevent's, so every greenlet has a
  transaction stack of its own. trytond 8.0 talks to PostgreSQL through
  psycopg 3, whose waits the patch makes cooperative; psycogreen (for
  psycopg2) does not apply.
* trytond's configuration is process-wide. :meth:`TrytonORM.load` reads
  exactly :attr:`Config.trytond_config <oe_web_socketio.config.Config>`:
  ``TRYTOND_CONFIG`` of the environment (which trytond reads at import) is
  hidden during the import; trytond's ``TRYTOND_<SECTION>__<OPTION>``
  variables still apply, as in trytond. Then, in this process only:

  - ``[database] uri`` gains ``application_name=oe_web_socketio/orm`` and
    ``options=-c default_transaction_read_only=on``: every connection
    trytond opens here is read-only for its whole session, whatever code
    runs on it;
  - ``[database] maxconn`` becomes ``2 * max_cursor + 1`` (see below;
    *max_cursor* is the server's ``longpolling_transactions``, not the
    size of its own cursor pools).

* Importing trytond switches the process to UTC (it sets ``TZ`` and calls
  :func:`time.tzset`) and sets ``PGTZ``: the server's log times are UTC
  from then on.

Invariants:

* At most ``max_cursor`` transactions per database run at once. A
  transaction first takes a slot of its database's :class:`FairGate`:
  waiters are served first come first served, sleep without polling, and
  give up after ``timeout`` seconds with
  :class:`~oe_web_socketio.exceptions.PoolTimeout`. trytond's pool of
  the database lends the connection: a psycopg_pool pool that
  :class:`TrytonORM` puts in place of trytond's own (see
  :meth:`TrytonORM._configure_database`). It may hold ``2 * max_cursor + 1``
  connections, so that it never makes a gated transaction wait: one per
  transaction; one more per transaction for the facts trytond looks up on
  a second connection while a transaction is open (``search_path``,
  ``has_proc``…, each once per process); one for trytond's ``ir_cache``
  listener (a ``LISTEN`` connection: not counted, like the bridge's).
* Every transaction is read-only (``BEGIN READ ONLY`` and the session's
  default) and is rolled back when it ends, whatever happened in it; its
  connection goes back to the pool, which discards a broken one and
  checks each before lending it; on the first broken one it checks all
  the idle ones (:class:`SweepingCheck`), so that a PostgreSQL restart
  costs a caller about a second, not one retry delay per dead connection.
* A database out of reach surfaces as
  :class:`~oe_web_socketio.exceptions.DatabaseUnavailable` within
  ``timeout`` seconds (the pool waits that long for a connection),
  never as a psycopg error. A database whose model pool could not be
  initialised is initialised again at its next use: it recovers without
  a restart.
* Readers see what other processes commit. Records are read in each
  transaction; what trytond caches per process (access rights, groups,
  translations: ``trytond.cache.MemoryCache``) is cleared when another
  process commits a change, by trytond's ``ir_cache`` listener, which
  runs in this process (a greenlet) once the first transaction started,
  provided ``[cache] clean_timeout = 0`` (the appliance's trytond.conf).
  With another value caches may be that many seconds stale:
  :meth:`TrytonORM.load` logs a warning.

Caveats:

* Use a transaction only in the greenlet that started it: trytond's
  ``Transaction()`` is greenlet-local, another greenlet has none.
* Writes fail in the database (:class:`psycopg.errors.ReadOnlySqlTransaction`),
  which is a guard against mistakes, not a security boundary (code in
  this process could ``SET`` the session back to read-write; a role with
  read privileges only would be one).
* Do not interrupt a transaction's start with an exception that is not an
  :class:`Exception` (``gevent.Timeout``, ``Greenlet.kill()``): the
  :class:`FairGate` copes, but psycopg_pool 3.3 loses a connection handed
  to a waiter gone that way (see :mod:`oe_web_socketio.pool`).
* Initialising a database's model pool imports and sets up every
  activated module: seconds of CPU during which no other greenlet runs.
  :meth:`TrytonORM.warm_up` does it at start.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psycopg
import psycopg_pool

from oe_web_socketio.exceptions import (
    ConfigError,
    DatabaseUnavailable,
    GateTimeout,
    PoolTimeout,
)

#: The logger's name from before the ORM moved into the Tryton package.
logger = logging.getLogger("oe_web_socketio.hosts.tryton_orm")

#: What trytond raises when the database cannot be reached: psycopg's
#: error, or its pool's when no connection could be opened in time.
_UNAVAILABLE_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout)

#: How trytond's connections of this process show in ``pg_stat_activity``.
APPLICATION_NAME = "oe_web_socketio/orm"

#: The libpq ``options`` that make a session read-only.
READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"


@dataclasses.dataclass(frozen=True)
class GateStats:
    """A snapshot of a :class:`FairGate`."""

    #: Slots taken and not yet released.
    in_use: int
    #: Callers waiting for a slot.
    waiting: int


class FairGate:
    """At most *size* holders at once; the others wait their turn.

    First come, first served: a slot released while callers wait is handed
    to the one that has waited longest (a newcomer cannot overtake it),
    and waiting is sleeping on an event of one's own, not polling. It uses
    :mod:`threading`, which gevent's patch makes cooperative: greenlets
    once patched, threads otherwise.

    A waiter interrupted by any exception (``gevent.Timeout`` and
    ``Greenlet.kill()`` included) leaves the queue; if a slot was handed
    to it at that very moment, it is passed on, never lost.

    :param size: the number of slots, at least 1.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._free = size
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> None:
        """Take a slot, waiting at most *timeout* seconds.

        :raises GateTimeout: no slot came free in time.
        """
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            turn = self._new_turn()
            self._waiters.append(turn)
        try:
            turn.wait(timeout)
        except BaseException:
            if self._leave(turn):
                self.release()
            raise
        if not self._leave(turn):
            raise GateTimeout(f"no free slot within {timeout:g} s")

    def release(self) -> None:
        """Give a slot back: to the first waiter, if any."""
        with self._lock:
            if self._waiters:
                # Handed over: the slot never becomes free for a newcomer.
                self._waiters.popleft().set()
            elif self._free < self.size:
                self._free += 1
            else:
                raise RuntimeError("released more often than acquired")

    @contextlib.contextmanager
    def slot(self, timeout: float) -> Iterator[None]:
        """Hold a slot for the ``with`` block (see :meth:`acquire`)."""
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def stats(self) -> GateStats:
        with self._lock:
            return GateStats(in_use=self.size - self._free, waiting=len(self._waiters))

    def _new_turn(self) -> threading.Event:
        """The event a waiter sleeps on until a slot is handed to it
        (looked up at each call: gevent's once patched)."""
        return threading.Event()

    def _leave(self, turn: threading.Event) -> bool:
        """Stop waiting for *turn*; return whether a slot was handed to it."""
        with self._lock:
            if turn.is_set():
                return True
            self._waiters.remove(turn)
            return False


def orm_uri(uri: str) -> str:
    """trytond's ``[database] uri`` *uri* for this process: the same
    server, read-only sessions named :data:`APPLICATION_NAME`."""
    parts = urllib.parse.urlsplit(uri)
    query = [
        (key, value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("application_name", "options")
    ]
    query += [("application_name", APPLICATION_NAME), ("options", READ_ONLY_OPTIONS)]
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    # Not urlunsplit: it drops the "//" of a URI without host, which libpq
    # needs (postgresql:///?host=…), and trytond keeps the netloc as is.
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{encoded}"


#: The trytond configuration file this process loaded, once loaded.
_loaded: dict[str, Any] = {}
_load_lock = threading.Lock()


class TrytonORM:
    """Read-only trytond transactions, at most *max_cursor* at once per
    database.

    :param trytond_config: the path of trytond's configuration file.
    :param databases: the databases that may be used.
    :param max_cursor: most transactions at once per database.
    :param timeout: seconds a transaction waits for a slot, and trytond's
        pool for a connection.
    """

    #: Seconds psycopg_pool keeps trying to open a connection in the
    #: background before it gives up (the next caller starts a new round);
    #: short, as the delay between tries doubles (see
    #: :class:`~oe_web_socketio.pool.CursorPools`).
    reconnect_timeout = 30.0
    #: Seconds the replaced trytond pool has to stop its workers.
    close_timeout = 5.0

    def __init__(
        self,
        trytond_config: str,
        databases: Iterable[str],
        max_cursor: int,
        timeout: float,
    ) -> None:
        if max_cursor < 1:
            raise ValueError(f"max_cursor must be at least 1, got {max_cursor}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.trytond_config = trytond_config
        self.databases = tuple(databases)
        self.max_cursor = max_cursor
        self.timeout = timeout
        self._gates = {name: FairGate(max_cursor) for name in self.databases}
        self._init_locks = {name: threading.Lock() for name in self.databases}
        # Databases whose model pool this object initialised.
        self._ready: set[str] = set()

    # -- trytond, once per process ---------------------------------------

    def load(self) -> None:
        """Import trytond and configure it for this process. Idempotent.

        :raises ConfigError: the file cannot be read, has no ``[database]
            uri``, or another configuration was loaded in this process.
        """
        with _load_lock:
            loaded = _loaded.get("settings")
            settings = (self.trytond_config, self.max_cursor)
            if loaded == settings:
                return
            if loaded is not None:
                raise ConfigError(
                    f"trytond is already configured in this process with {loaded!r}",
                    key="trytond_config",
                )
            _configure_trytond(self.trytond_config, self.max_cursor)
            _loaded["settings"] = settings

    def warm_up(self) -> None:
        """Initialise the model pool of every database now; log (one line
        each) those that cannot be initialised yet: they will be at their
        first use."""
        for database in self.databases:
            try:
                with self._gates[database].slot(self.timeout):
                    self._pool(database)
            except (GateTimeout, DatabaseUnavailable) as exc:
                logger.warning("Models of %r not loaded yet: %s", database, exc)

    # -- transactions -----------------------------------------------------

    @contextlib.contextmanager
    def transaction(
        self,
        database: str,
        uid: int,
        *,
        request: Mapping[str, Any] | None = None,
        statement_timeout: int | None = None,
    ) -> Iterator[Any]:
        """Run the ``with`` block in a read-only transaction as user *uid*.

        The context is the user's (``res.user`` preferences), with access
        rights checked unless *uid* is 0 (trytond's root). The block gets
        the :class:`trytond.transaction.Transaction`. It is rolled back at
        the end of the block whatever happened.

        :param request: trytond's ``_request`` context (``remote_addr``,
            ``http_host``, ``scheme``, ``is_secure``), if any.
        :param statement_timeout: seconds each SQL statement may run, or
            ``None`` for no limit.
        :raises ValueError: *database* is not one of :attr:`databases`.
        :raises PoolTimeout: no slot came free within :attr:`timeout`.
        :raises DatabaseUnavailable: the database cannot be reached, or
            the connection broke during the block.
        """
        gate = self._gates.get(database)
        if gate is None:
            raise ValueError(f"database {database!r} is not served")
        try:
            gate.acquire(self.timeout)
        except GateTimeout:
            raise PoolTimeout(database, self.timeout) from None
        try:
            pool = self._pool(database)
            transaction = self._start(database, uid, statement_timeout)
            try:
                if uid:
                    self._set_user_context(pool, transaction, request)
                yield transaction
            except psycopg.OperationalError as exc:
                if _broken(transaction):
                    raise DatabaseUnavailable(
                        database, f"connection lost: {exc}".strip()
                    ) from exc
                raise
            finally:
                _stop(database, transaction)
        finally:
            gate.release()

    def models(self, database: str) -> Any:
        """The initialised :class:`trytond.pool.Pool` of *database*; use it
        within :meth:`transaction`."""
        from trytond.pool import Pool

        return Pool(database)

    def stats(self, database: str) -> GateStats:
        """How many transactions on *database* run, and wait for a slot."""
        return self._gates[database].stats()

    def _pool(self, database: str) -> Any:
        """The model pool of *database*, initialised on first use."""
        from trytond.pool import Pool
        from trytond.transaction import Transaction

        with self._init_locks[database]:
            # Not in database_list() any more: trytond dropped the pool to
            # load it again (a module was activated, see Pool.refresh).
            if database in self._ready and database in Pool.database_list():
                return Pool(database)
            self._configure_database(database)
            logger.info("Loading the models of %r", database)
            pool = Pool(database)
            try:
                with Transaction(new=True).start(database, 0, readonly=True):
                    pool.init()
            except _UNAVAILABLE_ERRORS as exc:
                raise DatabaseUnavailable(database, _one_line(exc)) from exc
            self._ready.add(database)
            return pool

    def _configure_database(self, database: str) -> None:
        """Give trytond's database object a connection pool of ours.

        trytond builds a psycopg_pool pool with its own settings (30 s of
        waiting, a check that backs off on each broken connection: after a
        PostgreSQL restart, a caller meets the broken idle connections one
        by one, 1, 2, 4… seconds apart). It is replaced by one with the same
        connection string and sizes (so that trytond never resizes it),
        :attr:`timeout`, and a :class:`SweepingCheck`.
        """
        from trytond import backend

        db = backend.Database(database)
        old = db._connpool
        if getattr(old, "name", "").startswith(APPLICATION_NAME):
            return
        check = SweepingCheck()
        pool = psycopg_pool.ConnectionPool(
            old.conninfo,
            kwargs=old.kwargs,
            min_size=old.min_size,
            max_size=old.max_size,
            open=False,
            check=check,
            name=f"{APPLICATION_NAME}/{database}",
            timeout=self.timeout,
            reconnect_timeout=self.reconnect_timeout,
        )
        check.pool = pool
        db._connpool = pool
        old.close(timeout=self.close_timeout)
        pool.open()

    def _start(self, database: str, uid: int, statement_timeout: int | None) -> Any:
        from trytond.transaction import Transaction

        try:
            return Transaction(new=True).start(
                database, uid, readonly=True, timeout=statement_timeout
            )
        except _UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable(database, _one_line(exc)) from exc

    @staticmethod
    def _set_user_context(
        pool: Any, transaction: Any, request: Mapping[str, Any] | None
    ) -> None:
        """Set the user's context, as trytond's RPC layer would for a client
        that sends the user's preferences (``get_preferences`` is called
        without access check there too)."""
        user = pool.get("res.user")
        preferences = user.get_preferences(context_only=True)
        extra: dict[str, Any] = {"_check_access": True}
        if request is not None:
            extra["_request"] = dict(request)
        transaction.set_context(preferences, **extra)


class SweepingCheck:
    """psycopg_pool's ``check`` of a connection about to be lent which, on
    a broken one, also checks every idle connection of :attr:`pool` at
    once, in the background: they most likely broke together (PostgreSQL
    restarted, the backends were terminated), and psycopg_pool would hand
    them to the caller one by one, with a growing delay between them.

    :ivar pool: the pool to sweep; set it once the pool is built.
    """

    def __init__(self) -> None:
        self.pool: psycopg_pool.ConnectionPool | None = None
        self._sweeping = threading.Lock()

    def __call__(self, conn: Any) -> None:
        try:
            psycopg_pool.ConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None and self._sweeping.acquire(blocking=False):
                threading.Thread(
                    target=self._sweep, args=(self.pool,), daemon=True
                ).start()
            raise

    def _sweep(self, pool: psycopg_pool.ConnectionPool) -> None:
        try:
            pool.check()
        except psycopg_pool.PoolClosed:
            pass
        finally:
            self._sweeping.release()


def _configure_trytond(path: str, max_cursor: int) -> None:
    """Import trytond with exactly the configuration file *path*, then
    override what this process needs (see the module's docstring)."""
    try:
        with open(path, encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror}", key="trytond_config", source=path
        ) from exc
    hidden = os.environ.pop("TRYTOND_CONFIG", None)
    try:
        from trytond import config
    finally:
        if hidden is not None:
            os.environ["TRYTOND_CONFIG"] = hidden
    if hidden is not None and os.path.realpath(hidden) != os.path.realpath(path):
        logger.info("Ignoring TRYTOND_CONFIG=%s: using %s", hidden, path)
    config.update_etc(path)
    uri = config.get("database", "uri")
    if not (uri or "").startswith("postgresql:"):
        raise ConfigError(
            "oe_web_socketio needs trytond's PostgreSQL URI",
            key="[database] uri",
            source=path,
        )
    config.set("database", "uri", orm_uri(uri))
    config.set("database", "maxconn", str(2 * max_cursor + 1))
    clean_timeout = config.getint("cache", "clean_timeout")
    if clean_timeout:
        logger.warning(
            "[cache] clean_timeout = %d in %s: cached rights and settings may "
            "be read up to %d s stale (0 makes trytond notify changes)",
            clean_timeout,
            path,
            clean_timeout,
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _broken(transaction: Any) -> bool:
    connection = getattr(transaction, "connection", None)
    return connection is None or bool(getattr(connection, "broken", False))


def _stop(database: str, transaction: Any) -> None:
    """Roll *transaction* back and give its connection back; a failure
    there (a broken connection) is logged, not raised: the transaction
    was read-only, nothing is lost, and trytond's pool replaces the
    connection."""
    try:
        transaction.stop(False)
    except Exception as exc:  # noqa: BLE001 - logged; the pool recovers
        logger.info("Ending a transaction on %r: %s", database, _one_line(exc))
