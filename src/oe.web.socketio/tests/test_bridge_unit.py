"""Tests of :class:`oe_web_socketio.bridge.Bridge`'s delivery path, and of
the resume (:mod:`oe_web_socketio.resume`) on it, in this process, without
trytond.

The bridge reads a real outbox in a scratch database of the appliance's
PostgreSQL (``scratch_database``), on the connection a listener would give
it; what it sends goes to a python-socketio server that records its
emits instead of writing to sockets (fan-out itself, and real clients, are
tested in tests/test_bridge.py). Round trips are counted at the protocol
level, in libpq's trace of the connection: one ``ReadyForQuery`` ends
each.
"""

from __future__ import annotations

import logging
import tempfile
from types import SimpleNamespace
from typing import Any

import gevent.lock
import psycopg
import pytest
import socketio
from oe_web_socketio import outbox
from oe_web_socketio.bridge import Bridge, channel_room
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.pool import CursorPools
from oe_web_socketio.pubsub.feed import OutboxFeed
from oe_web_socketio.resume import resume
from psycopg import pq
from psycopg.conninfo import make_conninfo

pytestmark = pytest.mark.timeout(30)

CHANNEL = "orders"


class RecordingServer(socketio.Server):
    """A python-socketio server whose emits are recorded, not sent."""

    def __init__(self) -> None:
        super().__init__()
        self.emitted: list[tuple[Any, ...]] = []

    def emit(self, event, data=None, to=None, namespace=None, **kwargs) -> None:
        self.emitted.append((event, data, to, namespace))


@pytest.fixture
def conn(empty_scratch) -> psycopg.Connection:
    """An autocommit connection to a new outbox, as a listener's."""
    with empty_scratch.transaction():
        outbox.ensure_schema(empty_scratch.cursor())
    return empty_scratch


@pytest.fixture
def publisher(scratch_connect) -> psycopg.Connection:
    return scratch_connect()


@pytest.fixture
def bridge(scratch_database) -> Bridge:
    uri, name = scratch_database
    server = RecordingServer()
    directory = SocketDirectory()
    directory.add("/", SimpleNamespace(sockets={}))
    return Bridge(
        server,
        directory,
        pools=None,  # type: ignore[arg-type] - replays are not tested here
        conninfo=lambda database: uri,
        databases=[name],
    )


def connected(bridge: Bridge, conn: psycopg.Connection) -> OutboxFeed:
    """The bridge's feed of its database, as after the listener connected."""
    feed = bridge.feeds[bridge.databases[0]]
    feed.connected(conn)
    assert feed.outbox.epoch is not None
    return feed


def publish(conn: psycopg.Connection, *messages: Any) -> str:
    """Publish *messages* in one transaction; its notification's payload."""
    with conn.transaction():
        for message in messages:
            outbox.publish(conn.cursor(), message, CHANNEL)
        (xid,) = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    return xid


def notified(feed: OutboxFeed, conn: psycopg.Connection, payloads: list[str]) -> int:
    """Hand *payloads* to the bridge as the listener does; return the
    round trips it made."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            feed.notified(conn, payloads)
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return sum("\tReadyForQuery" in line for line in trace)


def delivered(bridge: Bridge) -> list[tuple[Any, int]]:
    """``(message, position)`` of each emit to the channel's room."""
    server = bridge.server
    assert isinstance(server, RecordingServer)
    room = channel_room(bridge.databases[0], CHANNEL)
    out = []
    for event, (message, channel, token), to, namespace in server.emitted:
        assert (event, channel, to, namespace) == ("message", CHANNEL, room, "/")
        out.append((message, int(token.rpartition(":")[2])))
    return out


def test_notifications_that_arrived_together_are_one_read_and_one_pass(
    bridge, conn, publisher
):
    feed = connected(bridge, conn)
    payloads = [
        publish(publisher, 1),
        publish(publisher, 2, 3, 4),
        publish(publisher, 5),
    ]
    assert notified(feed, conn, payloads) == 1
    assert delivered(bridge) == [(n, n) for n in range(1, 6)]
    assert feed.outbox.delivered == 5
    # The same notifications again: one read, nothing new, nothing sent.
    assert notified(feed, conn, payloads) == 1
    assert len(delivered(bridge)) == 5


def test_more_than_a_page_is_read_page_by_page_in_order(bridge, conn, publisher):
    bridge.feeds[bridge.databases[0]].page_size = 4
    feed = connected(bridge, conn)
    payloads = [publish(publisher, *range(n, n + 5)) for n in (0, 5)]
    # 4 + 4 + 2 rows: three reads.
    assert notified(feed, conn, payloads) == 3
    assert [message for message, _ in delivered(bridge)] == list(range(10))
    assert feed.outbox.delivered == 10


def test_an_outbox_of_before_is_positioned_by_the_bridge_in_commit_order(
    bridge, conn, publisher, scratch_connect, caplog
):
    conn.execute(f"DROP TRIGGER {outbox.POSITION_TRIGGER} ON {outbox.TABLE}")
    with caplog.at_level(logging.WARNING, logger="oe_web_socketio.bridge"):
        feed = connected(bridge, conn)
    assert not feed.positions_at_commit
    assert "does not position messages at commit" in caplog.text
    # Begun first, committed last: delivered last.
    early = scratch_connect()
    early.execute("BEGIN")
    outbox.publish(early.cursor(), "early", CHANNEL)
    (early_xid,) = early.execute("SELECT pg_current_xact_id()::text").fetchone()
    late_xid = publish(publisher, "late")
    early.execute("COMMIT")
    # BEGIN, the lock, the positions, COMMIT; then the read.
    assert notified(feed, conn, [late_xid, early_xid]) == 5
    assert delivered(bridge) == [("late", 1), ("early", 2)]
    # Once the Tryton module is updated, the bridge only reads again.
    with conn.transaction():
        outbox.ensure_schema(conn.cursor())
    feed.catch_up(conn)
    assert feed.positions_at_commit
    assert notified(feed, conn, [publish(publisher, "after")]) == 1
    assert delivered(bridge)[-1] == ("after", 3)


def test_a_notification_whose_rows_are_gone_is_one_line(
    bridge, conn, publisher, caplog
):
    feed = connected(bridge, conn)
    with publisher.transaction():
        outbox.publish(publisher.cursor(), "vanished", CHANNEL)
        publisher.execute(f"DELETE FROM {outbox.TABLE}")
        (gone,) = publisher.execute("SELECT pg_current_xact_id()::text").fetchone()
    kept = publish(publisher, "kept")
    with caplog.at_level(logging.WARNING, logger="oe_web_socketio.bridge"):
        # The read, then the look-up of the transaction it did not see.
        assert notified(feed, conn, [gone, kept]) == 2
        # Rows an earlier read delivered need no look-up.
        assert notified(feed, conn, [kept]) == 1
    assert delivered(bridge) == [("kept", 1)]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        (
            f"No message of transaction {gone} in the outbox of "
            f"{bridge.databases[0]!r} (deleted before delivery?)"
        )
    ]


# --- resuming: no gap, no duplicate


class ResumingSocket:
    """What :func:`oe_web_socketio.resume.resume` needs of a socket, which
    records what reaches it: the replayed messages (its emits), and the
    live ones sent to its channel's room once it is back on the live
    path."""

    path = "/"

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.database = bridge.databases[0]
        self.channels = frozenset({CHANNEL})
        self.replayed: list[Any] = []
        #: Index in the server's emits from which it is in its rooms.
        self.live_from: int | None = None
        self.on_replay: Any = None
        self.holding = False
        self.lock = gevent.lock.BoundedSemaphore()

    def resume_lock(self) -> gevent.lock.BoundedSemaphore:
        return self.lock

    def on_subscribe(self, channel: str) -> bool:
        raise AssertionError("subscribed in these tests")

    def emit(self, event: str, message: Any, channel: Any, token: str) -> None:
        assert (event, channel) == ("message", CHANNEL)
        self.replayed.append(message)
        if self.on_replay is not None:
            # What the listener delivers while the replay reads: the
            # database read yields, and the listener's greenlet runs.
            self.on_replay, on_replay = None, self.on_replay
            on_replay()

    def hold(self) -> None:
        assert self.live_from is None
        self.holding = True

    def release(self) -> None:
        if self.holding:
            self.holding = False
            self.live_from = len(self.bridge.server.emitted)

    def received(self) -> list[Any]:
        """Every message that reached it, in order."""
        assert self.live_from is not None, "never put back on the live path"
        live = [message for message, _ in delivered(self.bridge)]
        return self.replayed + live[self.live_from :]


@pytest.fixture
def replaying(bridge, scratch_database) -> Bridge:
    """The bridge, with cursors to replay from."""
    uri, name = scratch_database
    pools = CursorPools({name: make_conninfo(uri, dbname=name)}, 2, 5.0)
    bridge.pools = pools
    yield bridge
    pools.close()


def test_a_resume_misses_nothing_and_repeats_nothing(replaying, conn, publisher):
    bridge = replaying
    feed = connected(bridge, conn)
    notified(feed, conn, [publish(publisher, 1, 2, 3)])
    socket = ResumingSocket(bridge)

    def meanwhile() -> None:
        # Delivered live while the socket is out of its rooms: the next
        # round of the replay reads them.
        notified(feed, conn, [publish(publisher, 4, 5)])

    socket.on_replay = meanwhile
    answer = resume(socket, bridge, feed.outbox.token(1))
    assert answer == {"position": feed.outbox.token(5), "replayed": 4}
    # Back on the live path: what comes next arrives live, once.
    notified(feed, conn, [publish(publisher, 6)])
    assert socket.received() == [2, 3, 4, 5, 6]


def test_a_channel_history_is_its_last_delivered_lines(replaying, conn, publisher):
    bridge = replaying
    feed = connected(bridge, conn)
    notified(feed, conn, [publish(publisher, *range(5))])
    with publisher.transaction():
        cursor = publisher.cursor()
        outbox.publish(cursor, "other channel", f"{CHANNEL}-x")
        outbox.publish(cursor, "other namespace", CHANNEL, namespace="/elsewhere")
        outbox.publish(cursor, "to a socket", CHANNEL, namespace="/", sid="abc")
        outbox.publish(cursor, "every namespace", CHANNEL)
    # Committed but not delivered yet: not in the history.
    recent = bridge.recent(bridge.databases[0], CHANNEL, 3, namespace="/")
    assert [(m.payload, m.position) for m in recent] == [(2, 3), (3, 4), (4, 5)]
    assert [m.token for m in recent] == [feed.outbox.token(n) for n in (3, 4, 5)]
    (xid,) = conn.execute("SELECT max(xid)::text FROM web_socketio_outbox").fetchone()
    notified(feed, conn, [xid])
    recent = bridge.recent(bridge.databases[0], CHANNEL, 50, namespace="/")
    assert [m.payload for m in recent] == [0, 1, 2, 3, 4, "every namespace"]


def test_a_resume_from_now_on_or_up_to_date_replays_nothing(replaying, conn, publisher):
    bridge = replaying
    feed = connected(bridge, conn)
    notified(feed, conn, [publish(publisher, 1)])
    for now, token in ((1, None), (2, feed.outbox.token(2))):
        socket = ResumingSocket(bridge)
        assert resume(socket, bridge, token, wait=0.05) == {
            "position": feed.outbox.token(now),
            "replayed": 0,
        }
        notified(feed, conn, [publish(publisher, "next")])
        assert socket.received() == ["next"]


def test_a_resume_that_cannot_be_served_is_told_to_resync(
    replaying, conn, publisher, caplog
):
    bridge = replaying
    feed = connected(bridge, conn)
    notified(feed, conn, [publish(publisher, 1, 2, 3)])
    other_epoch = outbox.format_position("another", 1)
    cases = [
        ("not a position", "nonsense"),
        ("a position of another database", other_epoch),
        ("a position from the future", feed.outbox.token(99)),
    ]
    for reason, token in cases:
        socket = ResumingSocket(bridge)
        assert resume(socket, bridge, token, wait=0.05) == {
            "resync": True,
            "reason": reason,
            "position": feed.outbox.token(3),
        }
        assert socket.received() == []  # and it is back on the live path
    # Messages keep coming faster than it reads them.
    socket = ResumingSocket(bridge)
    socket.on_replay = lambda: notified(feed, conn, [publish(publisher, 4)])
    answer = resume(socket, bridge, feed.outbox.token(1), rounds=1)
    assert answer == {
        "resync": True,
        "reason": "too far behind",
        "position": feed.outbox.token(4),
    }
    # Pruned past its position.
    feed.history_max_count = 1
    assert feed.prune(conn) == 3
    socket = ResumingSocket(bridge)
    answer = resume(socket, bridge, feed.outbox.token(1))
    assert answer["reason"] == "past the retention window"
    assert socket.live_from is not None
    resyncs = [r for r in caplog.records if "must resynchronise" in r.getMessage()]
    assert len(resyncs) == 5  # one line each
