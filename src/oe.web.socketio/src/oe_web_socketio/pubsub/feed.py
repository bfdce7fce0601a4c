"""The PostgreSQL outbox of one database, read as it is notified: what
is committed there, in position order, to the
:class:`~oe_web_socketio.pubsub.deliver.Deliverer`.

An :class:`OutboxFeed` is what the
:class:`~oe_web_socketio.listener.Listener` of its database calls: on
each (re)connection (:meth:`OutboxFeed.connected`), for the notifications
of :data:`~oe_web_socketio.outbox.NOTIFY_CHANNEL` that arrived together
(:meth:`OutboxFeed.notified`, one read for all of them) and while idle
(:meth:`OutboxFeed.catch_up`). It keeps what is known of the outbox in an
:class:`Outbox` (its epoch, the last position delivered), which the
resume's side of :class:`~oe_web_socketio.pubsub.postgres.OutboxBroker`
reads, and prunes the outbox now and then.

Invariants:

* delivery of one batch, and the advance of :attr:`Outbox.delivered`,
  happen without yielding to another greenlet (what
  :mod:`oe_web_socketio.resume` relies on: a resuming socket misses
  nothing and gets nothing twice);
* a bad notification (not a transaction id), a notification whose rows
  are gone, or a row that cannot be delivered, is one log line and is
  skipped; the listener goes on;
* a notification costs one round trip (the read), and no transaction;
  for an outbox created before rows were positioned at commit
  (:data:`~oe_web_socketio.outbox.POSITIONS_AT_COMMIT` false), the feed
  positions them itself first (a transaction of four more round trips),
  until the Tryton module is updated;
* the server never creates the outbox (the Tryton module ``web_socketio``
  does, or :func:`oe_web_socketio.outbox.ensure_schema`): until it exists
  the feed says so once and looks again while idle.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent.event

from oe_web_socketio import outbox

if TYPE_CHECKING:
    import psycopg
    from prometheus_client import Histogram

    from oe_web_socketio.listener import Listener
    from oe_web_socketio.pubsub.deliver import Deliverer

#: Its log lines keep the name of the module it was first in.
logger = logging.getLogger("oe_web_socketio.bridge")

#: Transaction ids of delivered rows an :class:`Outbox` remembers, to
#: tell a notification whose rows were delivered by an earlier read from
#: one whose rows are gone without a query.
SEEN_XIDS = 4096


class Outbox:
    """What is known of the outbox of one database.

    :ivar epoch: the epoch of the outbox, once the listener connected.
    :ivar delivered: the position of the last message delivered.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.epoch: str | None = None
        self.delivered = 0
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


class OutboxFeed:
    """Deliver what is committed in the outbox of *database*, in order.

    :param database: the database.
    :param deliverer: what emits each message to this server's sockets.
    :param page_size: rows read at once.
    :param prune_interval: seconds between two prunings.
    :param history_max_age: seconds a message is kept for clients that
        resume.
    :param history_max_count: most messages kept for them.
    :param lag: where to observe the seconds from each message's row to
        its delivery (see :func:`oe_web_socketio.metrics.lag_histogram`),
        once per batch, after its emits.

    :ivar outbox: what is known of the outbox (:class:`Outbox`).
    :ivar messages: messages delivered (``/health``, ``/metrics``).
    """

    def __init__(
        self,
        database: str,
        deliverer: Deliverer,
        *,
        page_size: int,
        prune_interval: float,
        history_max_age: float,
        history_max_count: int,
        lag: Histogram | None = None,
    ) -> None:
        self.database = database
        self.deliverer = deliverer
        self.page_size = page_size
        self.prune_interval = prune_interval
        self.history_max_age = history_max_age
        self.history_max_count = history_max_count
        self.outbox = Outbox(database)
        self.messages = 0
        self._lag = lag.labels(database) if lag is not None else None
        self.listener: Listener | None = None
        self.last_prune = float("-inf")
        #: Whether the absence of the outbox was logged.
        self.missing_reported = False
        #: Whether rows are positioned at commit; if not, by this server.
        self.positions_at_commit = True

    def connected(self, conn: psycopg.Connection) -> None:
        """Catch up after a (re)connection: positions for what was
        committed meanwhile, then deliver what this server has not."""
        if self._find_outbox(conn):
            self.catch_up(conn)

    def _find_outbox(self, conn: psycopg.Connection) -> bool:
        """Read the outbox's epoch; whether the database has an outbox.

        The server never creates it: the Tryton module ``web_socketio``
        does when it is activated (another host calls
        :func:`oe_web_socketio.outbox.ensure_schema`). Until then the
        listener serves the other channels (Tryton's bus) and looks again
        while idle.
        """
        (found,) = conn.execute(outbox.HAS_OUTBOX).fetchone() or (False,)
        if not found:
            if not self.missing_reported:
                self.missing_reported = True
                logger.warning(
                    "No outbox in %r: messages published in the database are "
                    "not delivered until it exists (activate the Tryton module "
                    "web_socketio)",
                    self.database,
                )
            return False
        epoch, _pruned = conn.execute(outbox.STATE).fetchone() or (None, 0)
        self._check_positions(conn)
        if epoch != self.outbox.epoch:
            # First connection, or the outbox was created anew: what is
            # already there is history, for resuming clients only.
            (last,) = conn.execute(outbox.LAST_DELIVERABLE).fetchone() or (0,)
            if self.outbox.epoch is not None:
                logger.warning(
                    "The outbox of %r was created anew: clients resync",
                    self.database,
                )
            self.outbox.epoch = epoch
            self.outbox.advance(last or 0)
            if self.missing_reported:
                logger.info("Found the outbox of %r", self.database)
        return True

    def _check_positions(self, conn: psycopg.Connection) -> None:
        """Find out whether the outbox positions rows at commit; say it
        once when it does not, and when it starts to."""
        (at_commit,) = conn.execute(outbox.POSITIONS_AT_COMMIT).fetchone() or (False,)
        if at_commit == self.positions_at_commit:
            return
        self.positions_at_commit = at_commit
        if at_commit:
            logger.info("The outbox of %r positions messages at commit", self.database)
        else:
            logger.warning(
                "The outbox of %r does not position messages at commit: this "
                "server does, at a transaction per notification (update the "
                "Tryton module web_socketio)",
                self.database,
            )

    def catch_up(self, conn: psycopg.Connection) -> None:
        """Give positions to committed rows whose notification nobody
        handled (no server listened, or handling it failed), deliver what
        is new, prune when it is time. Run after each connection and
        while idle."""
        if self.outbox.epoch is None and not self._find_outbox(conn):
            return
        if not self.positions_at_commit:
            self._check_positions(conn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.LOCK_KEY,))
            missed = conn.execute(outbox.ASSIGN_MISSED_POSITIONS).rowcount
        if missed > 0:
            logger.info(
                "%d message(s) of %r committed without a notification handled",
                missed,
                self.database,
            )
        self._deliver_new(conn)
        self._maybe_prune(conn)

    def notified(self, conn: psycopg.Connection, payloads: list[str]) -> None:
        """Deliver what the notifications that arrived together announce:
        one read for all of them (and, in an outbox without the trigger,
        one transaction to position their rows first)."""
        if self.outbox.epoch is None and not self._find_outbox(conn):
            return
        xids = outbox.xids(payloads)
        for payload in payloads:
            if not outbox.is_xid(payload):
                logger.warning(
                    "Ignored a notification on %r of %r that is not ours: %.80r",
                    outbox.NOTIFY_CHANNEL,
                    self.database,
                    payload,
                )
        if xids and not self.positions_at_commit:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.LOCK_KEY,))
                conn.execute(outbox.ASSIGN_POSITIONS, (xids,))
        self._deliver_new(conn)
        # A notified transaction's rows are committed, and positioned, by
        # now: unless they are gone, this read or an earlier one had them.
        pending = [xid for xid in xids if xid not in self.outbox.seen_xids]
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
                        self.database,
                    )
        self._maybe_prune(conn)

    def _deliver_new(self, conn: psycopg.Connection) -> None:
        """Deliver every positioned row after :attr:`Outbox.delivered`: one
        query, unless more than a page came."""
        while True:
            rows = conn.execute(
                outbox.NEW_MESSAGES, (self.outbox.delivered, self.page_size)
            ).fetchall()
            if not rows:
                return
            # From here to advance(), nothing yields.
            paths = self.deliverer.directory.paths()
            for row in rows:
                self._deliver(row, paths)
                self.outbox.saw(row[5])
            self.outbox.advance(rows[-1][0])
            # Counted per batch, after the emits: the figures cost nothing
            # per recipient.
            self.messages += len(rows)
            if self._lag is not None:
                for row in rows:
                    self._lag.observe(row[6])
            if len(rows) < self.page_size:
                return

    def _deliver(self, row: tuple[Any, ...], paths: list[str]) -> None:
        position, channel, namespace, sid, text = row[:5]
        try:
            payload = json.loads(text)
        except ValueError:
            logger.warning(
                "Skipped message %d of %r: not JSON", position, self.database
            )
            return
        self.deliverer.deliver(
            self.database,
            position,
            self.outbox.token(position),
            payload,
            channel=channel,
            namespace=namespace,
            sid=sid,
            paths=paths,
        )

    def _maybe_prune(self, conn: psycopg.Connection) -> None:
        now = time.monotonic()
        if now - self.last_prune < self.prune_interval:
            return
        self.last_prune = now
        self.prune(conn)

    def prune(self, conn: psycopg.Connection) -> int:
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
        logger.info("Pruned the outbox of %r through %d", self.database, through)
        return int(through)
