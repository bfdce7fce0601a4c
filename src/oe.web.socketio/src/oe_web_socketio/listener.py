"""The LISTEN loop: one dedicated PostgreSQL connection per database.

A :class:`Listener` runs in a greenlet of its own. It opens a connection
(never one of the cursor pool: a connection that ``LISTEN``\\ s must not be
shared), ``LISTEN``\\ s on the channels it has handlers for, calls
``on_connect`` (where the caller catches up with what happened while it
was not listening), then hands each batch of notifications to the
handler of its channel, in the order PostgreSQL delivered them, which is
commit order.

Invariants:

* the loop never dies of an error: a broken connection (PostgreSQL
  restarted, the backend terminated, the network gone) is logged once and
  opened again after a delay that doubles from :attr:`Listener.backoff_min`
  to :attr:`Listener.backoff_max` and is reset by a successful ``LISTEN``;
  an exception of a handler is logged with its traceback and the loop goes
  on with the next batch;
* handlers and ``on_connect`` run in the listener's greenlet, one at a
  time, with the listener's connection (autocommit: they open their own
  transactions with ``connection.transaction()``); they must not keep it;
* while no notification comes, the connection is checked every
  :attr:`Listener.keepalive` seconds (a silent network failure is found
  within that time plus libpq's TCP keepalives) and ``on_idle`` runs;
* :attr:`Listener.state` and :meth:`Listener.health` say whether it
  listens now.

Import this module after :func:`oe_web_socketio.patch.patch`.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

#: A handler: called with the listener's connection and the payloads of a
#: batch of notifications of its channel, in order.
Handler = Callable[[psycopg.Connection, list[str]], None]

#: Called with the listener's connection once it listens, after each
#: (re)connection; or while idle.
ConnectionHook = Callable[[psycopg.Connection], None]


def connect(conninfo: str, application_name: str, timeout: float) -> psycopg.Connection:
    """A connection of its own (autocommit) to *conninfo*, named
    *application_name* in ``pg_stat_activity``, that may take *timeout*
    seconds to open: a listener's, or a publisher's kept open."""
    return psycopg.connect(
        conninfo,
        autocommit=True,
        application_name=application_name,
        connect_timeout=math.ceil(timeout),
    )


class State(enum.Enum):
    """Where a :class:`Listener` is."""

    #: Not started, or connecting for the first time.
    STARTING = "starting"
    #: Listening: notifications are received.
    LISTENING = "listening"
    #: The connection was lost or could not be opened; trying again.
    RECONNECTING = "reconnecting"
    #: Stopped for good.
    STOPPED = "stopped"


class Listener:
    """``LISTEN`` on *channels* of one database, for ever.

    :param database: the database name, for messages.
    :param conninfo: the libpq connection string of the database.
    :param handlers: the handler of each channel.
    :param on_connect: run after each successful ``LISTEN``, before the
        first notification is handled; an error in it counts as a lost
        connection (it is tried again after the delay).
    :param on_idle: run while no notification comes, every
        :attr:`keepalive` seconds at most.
    :param application_name: how the connection shows in
        ``pg_stat_activity``.
    """

    #: First delay before connecting again, in seconds.
    backoff_min = 0.5
    #: Longest delay before connecting again, in seconds.
    backoff_max = 30.0
    #: Seconds without notification after which the connection is checked.
    keepalive = 15.0
    #: Seconds the connection may take to open.
    connect_timeout = 10

    def __init__(
        self,
        database: str,
        conninfo: str,
        handlers: Mapping[str, Handler],
        *,
        on_connect: ConnectionHook | None = None,
        on_idle: ConnectionHook | None = None,
        application_name: str = "oe_web_socketio listener",
    ) -> None:
        if not handlers:
            raise ValueError("a listener needs at least one channel")
        self.database = database
        self.conninfo = conninfo
        self.handlers = dict(handlers)
        self.on_connect = on_connect
        self.on_idle = on_idle
        self.application_name = application_name
        self.state = State.STARTING
        #: How many times the connection was lost or could not be opened.
        self.failures = 0
        #: The last error, as a line of text, or ``None``.
        self.last_error: str | None = None
        #: When the listener last started listening (``time.time()``).
        self.listening_since: float | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False
        self._was_listening = False

    def __repr__(self) -> str:
        return f"<Listener {self.database} {self.state.value}>"

    def start(self) -> None:
        """Start the loop in a greenlet (at most once)."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close its connection."""
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=timeout)
        self.state = State.STOPPED

    def health(self) -> dict[str, Any]:
        """The state of the listener, for ``/health``."""
        return {
            "state": self.state.value,
            "failures": self.failures,
            "last_error": self.last_error,
            "listening_since": self.listening_since,
        }

    # --- the loop

    def _run(self) -> None:
        delay = self.backoff_min
        while not self._stopping:
            try:
                self._session()
                continue
            except psycopg.Error as exc:
                error: Exception = exc
            except Exception as exc:
                logger.exception("Listener of %r failed", self.database)
                error = exc
            if self._was_listening:
                # It listened: a new failure, not the same one again.
                delay = self.backoff_min
            self.failures += 1
            self.last_error = " ".join(str(error).split()) or type(error).__name__
            self.state = State.RECONNECTING
            logger.warning(
                "Listener of %r: %s; connecting again in %g s",
                self.database,
                self.last_error,
                delay,
            )
            gevent.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def _session(self) -> None:
        """One connection: listen, catch up, handle until it fails."""
        self._was_listening = False
        with connect(
            self.conninfo, self.application_name, self.connect_timeout
        ) as conn:
            for channel in self.handlers:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            if self.on_connect is not None:
                self.on_connect(conn)
            self._was_listening = True
            self.listening_since = time.time()
            self.state = State.LISTENING
            logger.info(
                "Listening on %s of %r",
                ", ".join(map(repr, self.handlers)),
                self.database,
            )
            while not self._stopping:
                batch = list(conn.notifies(timeout=self.keepalive, stop_after=1))
                if not batch:
                    conn.execute("SELECT 1")
                    self._run_hook(self.on_idle, conn)
                    continue
                # Whatever else already arrived, without waiting.
                batch.extend(conn.notifies(timeout=0))
                self._handle(conn, batch)

    def _handle(self, conn: psycopg.Connection, batch: list[psycopg.Notify]) -> None:
        payloads: dict[str, list[str]] = {}
        for notify in batch:
            payloads.setdefault(notify.channel, []).append(notify.payload)
        for channel, texts in payloads.items():
            handler = self.handlers.get(channel)
            if handler is not None:
                self._guarded(
                    conn,
                    f"handling {len(texts)} notification(s) on {channel!r}",
                    handler,
                    texts,
                )

    def _run_hook(self, hook: ConnectionHook | None, conn: psycopg.Connection) -> None:
        if hook is not None:
            self._guarded(conn, "the idle task", hook)

    def _guarded(
        self,
        conn: psycopg.Connection,
        what: str,
        function: Callable[..., None],
        *args: Any,
    ) -> None:
        """Run ``function(conn, *args)``: a lost connection ends the session
        (the loop connects again); any other error is logged and the loop
        goes on, unless it broke the connection."""
        try:
            function(conn, *args)
        except psycopg.OperationalError:
            raise
        except Exception:
            logger.exception("Error in %s of %r", what, self.database)
            if conn.broken:
                raise
