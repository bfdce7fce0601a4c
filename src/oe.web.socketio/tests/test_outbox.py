"""Tests of :mod:`oe_web_socketio.outbox`.

Two kinds: its pure parts in process (argument checks and JSON rules of
:func:`~oe_web_socketio.outbox.publish`, recorded by a cursor that keeps
what it is given; transaction ids; client positions), and its SQL against
the appliance's real PostgreSQL (the ``[database] uri`` of the
trytond.conf that ``TRYTOND_CONFIG`` names, as bin/test sets it), in a
scratch database named after ``--db`` that the tests create and drop. That
servers deliver what is published is tested with real clients in
tests/test_bridge.py.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from oe_web_socketio import outbox

pytestmark = pytest.mark.timeout(30)

EPOCH = "0b5c64d2-8a4e-4f0e-9d43-6b2f1b2a9c11"


class RecordingCursor:
    """Keeps the statements it is given (the SQL is tested below)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def execute(self, query: Any, params: Any = None, /) -> None:
        self.calls.append((query, params))


def inserted(cursor: RecordingCursor) -> tuple[Any, ...]:
    """The parameters of the one row *cursor* was asked to insert."""
    (insert, notify) = cursor.calls
    assert insert[0].startswith(f"INSERT INTO {outbox.TABLE} ")
    assert notify == (
        "SELECT pg_notify(%s, pg_current_xact_id()::text)",
        (outbox.NOTIFY_CHANNEL,),
    )
    return insert[1]


# -- publish: arguments and JSON -----------------------------------------------


def test_publish_inserts_compact_json_then_notifies():
    cursor = RecordingCursor()
    outbox.publish(cursor, {"text": "café", "n": [1, 2.5, None, True]}, "orders")
    channel, namespace, sid, payload = inserted(cursor)
    assert (channel, namespace, sid) == ("orders", None, None)
    # Compact, and not escaped: what is stored is what clients receive.
    assert payload == '{"text":"café","n":[1,2.5,null,true]}'


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: outbox.broadcast(c, 1), (None, None, None, "1")),
        (lambda c: outbox.broadcast(c, 1, "/chat"), (None, "/chat", None, "1")),
        (
            lambda c: outbox.broadcast_channel(c, "x", "room", "/chat"),
            ("room", "/chat", None, '"x"'),
        ),
        (lambda c: outbox.send(c, "sid1", []), (None, "/", "sid1", "[]")),
        (lambda c: outbox.send(c, "sid1", {}, "/n"), (None, "/n", "sid1", "{}")),
    ],
)
def test_the_shorthands_fill_the_row(call, expected):
    cursor = RecordingCursor()
    call(cursor)
    assert inserted(cursor) == expected


@pytest.mark.parametrize(
    "message",
    [
        object(),
        {1, 2},
        b"bytes",
        float("nan"),
        {"deep": [float("inf")]},
        {(1, 2): "tuple key"},
    ],
)
def test_a_message_that_is_not_json_is_refused_before_any_statement(message):
    cursor = RecordingCursor()
    with pytest.raises(TypeError, match="a message must be JSON"):
        outbox.publish(cursor, message, "orders")
    assert cursor.calls == []


def test_a_circular_message_is_refused():
    message: list[Any] = []
    message.append(message)
    cursor = RecordingCursor()
    with pytest.raises(TypeError, match="a message must be JSON"):
        outbox.publish(cursor, message)
    assert cursor.calls == []


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"channel": ""}, "channel"),
        ({"channel": "x" * (outbox.MAX_NAME_LENGTH + 1)}, "channel"),
        ({"channel": 5}, "channel"),
        ({"channel": b"orders"}, "channel"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": ["/"]}, "namespace"),
        ({"namespace": "/", "sid": ""}, "sid"),
        ({"namespace": "/", "sid": 12}, "sid"),
    ],
)
def test_bad_names_are_refused_naming_the_argument(kwargs, what):
    cursor = RecordingCursor()
    with pytest.raises(ValueError, match=f"^{what} must be a string of 1 to 200"):
        outbox.publish(cursor, "m", **kwargs)
    assert cursor.calls == []


def test_names_of_the_longest_length_are_accepted():
    cursor = RecordingCursor()
    longest = "é" * outbox.MAX_NAME_LENGTH
    outbox.publish(cursor, "m", longest, namespace=longest)
    assert inserted(cursor)[:2] == (longest, longest)


def test_a_message_to_a_socket_needs_its_namespace():
    cursor = RecordingCursor()
    with pytest.raises(ValueError, match="needs its namespace"):
        outbox.publish(cursor, "m", sid="abc")
    assert cursor.calls == []


# -- transaction ids and positions ---------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("1", True),
        ("748", True),
        ("9" * 20, True),
        ("9" * 21, False),
        ("", False),
        ("-1", False),
        (" 1", False),
        ("1.0", False),
        ("12a", False),
        ("١٢", False),  # digits, not ASCII ones
        ('{"channel": "bus"}', False),
    ],
)
def test_is_xid(payload, expected):
    assert outbox.is_xid(payload) is expected


def test_xids_keeps_the_first_of_each_in_order_and_leaves_out_the_rest():
    payloads = ["30", "bad", "10", "30", "", "20", "10", "٣"]
    assert outbox.xids(payloads) == ["30", "10", "20"]
    assert outbox.xids([]) == []


@pytest.mark.parametrize(
    ("epoch", "position"), [(EPOCH, 0), (EPOCH, 1), (EPOCH, 2**63 - 1), ("a:b", 7)]
)
def test_positions_round_trip(epoch, position):
    token = outbox.format_position(epoch, position)
    assert isinstance(token, str)
    assert outbox.parse_position(token) == (epoch, position)


@pytest.mark.parametrize(
    "token",
    [
        None,
        12,
        12.5,
        [EPOCH, 3],
        {"epoch": EPOCH},
        b"e:1",
        "",
        "garbage",
        ":3",
        f"{EPOCH}:",
        f"{EPOCH}:-1",
        f"{EPOCH}:+1",
        f"{EPOCH}: 1",
        f"{EPOCH}:1.5",
        f"{EPOCH}:1e3",
        f"{EPOCH}:٣",
        "e" * 79 + ":1",
    ],
)
def test_what_is_not_a_position_is_refused(token):
    assert outbox.parse_position(token) is None


def test_a_position_of_80_characters_is_the_longest():
    token = "e" * 78 + ":1"
    assert outbox.parse_position(token) == ("e" * 78, 1)


# -- the SQL, against PostgreSQL -----------------------------------------------


@pytest.fixture
def db(empty_scratch) -> psycopg.Connection:
    """An autocommit connection to the scratch database, without outbox."""
    return empty_scratch


@pytest.fixture
def connect(scratch_connect) -> Any:
    """``connect()``: another connection to the scratch database."""
    return scratch_connect


def create(conn: psycopg.Connection, *, at_commit: bool = True) -> None:
    """Create the outbox; ``at_commit=False``: as it was before rows were
    positioned at commit (no trigger), positioned by servers."""
    with conn.transaction():
        outbox.ensure_schema(conn.cursor())
        if not at_commit:
            conn.execute(f"DROP TRIGGER {outbox.POSITION_TRIGGER} ON {outbox.TABLE}")


def catalog(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """The columns, indexes and sequences of the outbox, as PostgreSQL
    describes them."""
    columns = conn.execute(
        """SELECT table_name, column_name, data_type, is_nullable,
                  column_default
           FROM information_schema.columns
           WHERE table_name LIKE %s ORDER BY table_name, ordinal_position""",
        (f"{outbox.TABLE}%",),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE %s "
        "ORDER BY indexname",
        (f"{outbox.TABLE}%",),
    ).fetchall()
    sequences = conn.execute(
        "SELECT sequence_name FROM information_schema.sequences "
        "WHERE sequence_name LIKE %s ORDER BY 1",
        (f"{outbox.TABLE}%",),
    ).fetchall()
    triggers = conn.execute(
        "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgrelid = %s::regclass ORDER BY tgname",
        (outbox.TABLE,),
    ).fetchall()
    functions = conn.execute(
        "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE %s ORDER BY 1",
        (f"{outbox.TABLE}%",),
    ).fetchall()
    return [*columns, *indexes, *sequences, *triggers, *functions]


def publish_committed(conn: psycopg.Connection, *messages: Any, channel=None) -> str:
    """Publish *messages* in one transaction; return its id."""
    with conn.transaction():
        for message in messages:
            outbox.publish(conn.cursor(), message, channel)
        (xid,) = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    return xid


def by_position(conn: psycopg.Connection) -> list[tuple[int, Any]]:
    rows = conn.execute(
        f"SELECT position, payload::text FROM {outbox.TABLE} "
        "WHERE position IS NOT NULL ORDER BY position"
    ).fetchall()
    return [(position, json.loads(text)) for position, text in rows]


def assign(conn: psycopg.Connection, xids: list[str]) -> list[str]:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.LOCK_KEY,))
        return [row[0] for row in conn.execute(outbox.ASSIGN_POSITIONS, (xids,))]


def test_ensure_schema_twice_changes_nothing(db):
    create(db)
    described = catalog(db)
    assert described, "no outbox table was created"
    assert db.execute(outbox.POSITIONS_AT_COMMIT).fetchone() == (True,)
    (epoch, pruned) = db.execute(outbox.STATE).fetchone()
    assert pruned == 0
    xid = publish_committed(db, "kept")
    assign(db, [xid])
    create(db)
    assert catalog(db) == described
    assert db.execute(outbox.STATE).fetchall() == [(epoch, 0)]
    assert by_position(db) == [(1, "kept")]
    assert db.execute(outbox.LAST_POSITION).fetchone() == (1,)


def test_a_new_outbox_has_a_new_epoch_and_nothing_to_deliver(db):
    create(db)
    (first, _) = db.execute(outbox.STATE).fetchone()
    assert db.execute(outbox.LAST_POSITION).fetchone() == (0,)
    assert db.execute(outbox.LAST_DELIVERABLE).fetchone() == (0,)
    db.execute(f"DROP TABLE {outbox.TABLE}_state")
    create(db)
    (second, _) = db.execute(outbox.STATE).fetchone()
    assert second != first


def test_an_outbox_of_before_gets_the_trigger_from_ensure_schema(db):
    create(db, at_commit=False)
    assert db.execute(outbox.POSITIONS_AT_COMMIT).fetchone() == (False,)
    publish_committed(db, "before")
    create(db)
    assert db.execute(outbox.POSITIONS_AT_COMMIT).fetchone() == (True,)
    publish_committed(db, "after")
    # The row of before waits for a server (ASSIGN_MISSED_POSITIONS).
    assert by_position(db) == [(1, "after")]


#: The positions of :func:`interleaved`'s messages once ``late``, then
#: ``early``, then a lone message committed.
COMMIT_ORDER = [
    (1, "late 1"),
    (2, "late 2"),
    (3, "early 1"),
    (4, "early 2"),
    (5, "lone"),
]


def interleaved(connect) -> tuple[psycopg.Connection, psycopg.Connection]:
    """Two open transactions, ``early`` and ``late``, that published two
    messages each, interleaved: ids alternate between them, and the one
    that began first has the lower xid (the tests commit it last)."""
    early, late = connect(), connect()
    early.execute("BEGIN")
    late.execute("BEGIN")
    outbox.publish(early.cursor(), "early 1")
    outbox.publish(late.cursor(), "late 1")
    outbox.publish(early.cursor(), "early 2")
    outbox.publish(late.cursor(), "late 2")
    return early, late


def test_rows_are_positioned_at_commit_in_commit_then_insertion_order(db, connect):
    create(db)
    early, late = interleaved(connect)
    late.execute("COMMIT")
    # Not committed: no position yet, none taken.
    assert by_position(db) == [(1, "late 1"), (2, "late 2")]
    early.execute("COMMIT")
    publish_committed(db, "lone")
    assert by_position(db) == COMMIT_ORDER
    # Nothing is left for a server to position.
    with db.transaction():
        assert db.execute(outbox.ASSIGN_MISSED_POSITIONS).rowcount == 0


def test_a_rolled_back_or_deleted_message_takes_no_position(db):
    create(db)
    with pytest.raises(ZeroDivisionError), db.transaction():
        outbox.publish(db.cursor(), "rolled back")
        raise ZeroDivisionError
    with db.transaction():
        outbox.publish(db.cursor(), "deleted")
        db.execute(f"DELETE FROM {outbox.TABLE}")
        outbox.publish(db.cursor(), "kept")
    assert by_position(db) == [(1, "kept")]
    assert db.execute(outbox.LAST_POSITION).fetchone() == (1,)


def test_a_big_transaction_gets_consecutive_positions_in_insertion_order(db):
    create(db)
    publish_committed(db, *range(500))
    assert by_position(db) == [(n + 1, n) for n in range(500)]


def test_with_constraints_immediate_each_statement_positions_its_rows(db):
    """``SET CONSTRAINTS ALL IMMEDIATE`` fires the trigger after each
    insert: every row is positioned, in order, and only once."""
    create(db)
    with db.transaction():
        db.execute("SET CONSTRAINTS ALL IMMEDIATE")
        outbox.publish(db.cursor(), "first")
        outbox.publish(db.cursor(), "second")
        with pytest.raises(ZeroDivisionError), db.transaction():
            outbox.publish(db.cursor(), "rolled back to the savepoint")
            raise ZeroDivisionError
        outbox.publish(db.cursor(), "third")
    assert [payload for _, payload in by_position(db)] == ["first", "second", "third"]
    positions = [position for position, _ in by_position(db)]
    assert positions == sorted(set(positions))


def test_a_commit_waits_for_the_one_positioning_before_it(db, connect):
    """What makes positions visible in order: a transaction positioning
    its rows holds the lock until its commit is visible; the next waits."""
    create(db)
    holder, publisher = connect(), connect()
    holder.execute("BEGIN")
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (outbox.LOCK_KEY,))
    publisher.execute("BEGIN")
    outbox.publish(publisher.cursor(), "waits")
    pid = publisher.info.backend_pid
    committed = threading.Thread(target=publisher.execute, args=("COMMIT",))
    committed.start()
    try:
        deadline = time.monotonic() + 10
        while not db.execute(
            "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
            "AND NOT granted",
            (pid,),
        ).fetchone():
            assert time.monotonic() < deadline, "the commit did not wait"
            time.sleep(0.01)
        assert by_position(db) == []
    finally:
        holder.execute("COMMIT")
        committed.join(10)
    assert not committed.is_alive()
    assert by_position(db) == [(1, "waits")]


def test_positions_follow_the_xid_array_and_insertion_order(db, connect):
    create(db, at_commit=False)
    early, late = interleaved(connect)
    (early_xid,) = early.execute("SELECT pg_current_xact_id()::text").fetchone()
    (late_xid,) = late.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert int(early_xid) < int(late_xid)
    late.execute("COMMIT")
    early.execute("COMMIT")
    lone = publish_committed(db, "lone")
    # Commit order, as the notifications come.
    returned = assign(db, [late_xid, early_xid, lone])
    assert sorted(returned) == sorted([late_xid, late_xid, early_xid, early_xid, lone])
    assert by_position(db) == COMMIT_ORDER
    # Positioned once: the same notification again changes nothing.
    assert assign(db, [late_xid, early_xid, lone]) == []
    assert db.execute(outbox.LAST_POSITION).fetchone() == (5,)


def test_rows_of_a_transaction_not_yet_committed_are_left_for_later(db, connect):
    create(db, at_commit=False)
    open_one = connect()
    open_one.execute("BEGIN")
    outbox.publish(open_one.cursor(), "open")
    (open_xid,) = open_one.execute("SELECT pg_current_xact_id()::text").fetchone()
    done = publish_committed(db, "done")
    assert assign(db, [open_xid, done]) == [done]
    assert by_position(db) == [(1, "done")]
    open_one.execute("COMMIT")
    assert assign(db, [open_xid]) == [open_xid]
    assert by_position(db) == [(1, "done"), (2, "open")]


def test_missed_rows_are_positioned_in_transaction_id_order(db, connect):
    create(db, at_commit=False)
    first, second = connect(), connect()
    first.execute("BEGIN")
    second.execute("BEGIN")
    outbox.publish(first.cursor(), "first 1")
    outbox.publish(second.cursor(), "second 1")
    outbox.publish(first.cursor(), "first 2")
    second.execute("COMMIT")
    first.execute("COMMIT")
    with db.transaction():
        assert db.execute(outbox.ASSIGN_MISSED_POSITIONS).rowcount == 3
    assert [payload for _, payload in by_position(db)] == [
        "first 1",
        "first 2",
        "second 1",
    ]


def test_xids_with_rows(db):
    create(db)
    xid = publish_committed(db, "m")
    (empty,) = db.execute("SELECT pg_current_xact_id()::text").fetchone()
    found = db.execute(outbox.XIDS_WITH_ROWS, ([xid, empty, "1"],)).fetchall()
    assert found == [(xid,)]


def published_and_positioned(db: psycopg.Connection, count: int, **kwargs) -> None:
    """Messages 1 to *count*, a transaction each (positioned at commit)."""
    for number in range(1, count + 1):
        publish_committed(db, number, **kwargs)


def test_prune_keeps_the_newest_and_records_how_far(db):
    create(db)
    published_and_positioned(db, 10)
    (through,) = db.execute(outbox.PRUNE_THRESHOLD, (3600, 3)).fetchone()
    assert through == 7
    with db.transaction():
        db.execute(outbox.PRUNE, {"through": through})
    assert [position for position, _ in by_position(db)] == [8, 9, 10]
    assert db.execute(outbox.STATE).fetchone()[1] == 7
    assert db.execute(outbox.LAST_DELIVERABLE).fetchone() == (10,)
    # As many as the count to keep: the threshold prunes nothing more.
    assert db.execute(outbox.PRUNE_THRESHOLD, (3600, 3)).fetchone() == (7,)
    # A lower threshold never moves pruned_through back.
    with db.transaction():
        db.execute(outbox.PRUNE, {"through": 5})
    assert db.execute(outbox.STATE).fetchone()[1] == 7


def test_prune_threshold_counts_age_too(db):
    create(db)
    published_and_positioned(db, 5)
    db.execute(
        f"UPDATE {outbox.TABLE} SET create_date = create_date - interval '2 hours' "
        "WHERE position <= 3"
    )
    assert db.execute(outbox.PRUNE_THRESHOLD, (3600, 100)).fetchone() == (3,)
    # Whichever of age and count prunes more wins.
    assert db.execute(outbox.PRUNE_THRESHOLD, (3600, 1)).fetchone() == (4,)
    assert db.execute(outbox.PRUNE_THRESHOLD, (3 * 3600, 100)).fetchone()[0] <= 0


def test_a_late_commit_of_an_old_transaction_prunes_no_younger_message(db, connect):
    create(db)
    slow = connect()
    slow.execute("BEGIN")
    outbox.publish(slow.cursor(), "begun two hours ago")
    slow.execute(
        f"UPDATE {outbox.TABLE} SET create_date = create_date - interval '2 hours'"
    )
    published_and_positioned(db, 3)
    slow.execute("COMMIT")
    assert [payload for _, payload in by_position(db)] == [
        1,
        2,
        3,
        "begun two hours ago",
    ]
    # Messages 1 to 3 are seconds old: kept for an hour, they must not go.
    (through,) = db.execute(outbox.PRUNE_THRESHOLD, (3600, 100)).fetchone()
    assert through is None or through < 1


def test_an_empty_outbox_has_no_threshold_and_delivers_from_pruned(db):
    create(db)
    assert db.execute(outbox.PRUNE_THRESHOLD, (3600, 3)).fetchone() == (None,)
    published_and_positioned(db, 2)
    with db.transaction():
        db.execute(outbox.PRUNE, {"through": 2})
    assert by_position(db) == []
    assert db.execute(outbox.LAST_DELIVERABLE).fetchone() == (2,)


def test_messages_between_pages_in_order(db):
    create(db)
    published_and_positioned(db, 6)
    rows = db.execute(outbox.MESSAGES_BETWEEN, (1, 5, 3)).fetchall()
    assert [(row[0], row[4]) for row in rows] == [(2, "2"), (3, "3"), (4, "4")]


def test_new_messages_page_in_order_with_their_transaction(db):
    create(db)
    first = publish_committed(db, 1, 2)
    second = publish_committed(db, 3)
    rows = db.execute(outbox.NEW_MESSAGES, (1, 10)).fetchall()
    assert [(row[0], row[4], row[5]) for row in rows] == [
        (2, "2", first),
        (3, "3", second),
    ]
    assert len(db.execute(outbox.NEW_MESSAGES, (0, 2)).fetchall()) == 2


def test_messages_for_a_socket(db):
    create(db)
    for message, kwargs in [
        ("a", {"channel": "a"}),
        ("b", {"channel": "b"}),
        ("all", {}),
        ("chat only", {"namespace": "/chat"}),
        ("a in chat", {"channel": "a", "namespace": "/chat"}),
        ("one socket", {"namespace": "/", "sid": "s1"}),
    ]:
        with db.transaction():
            outbox.publish(db.cursor(), message, **kwargs)

    def messages_for(namespace: str, channels: list[str]) -> list[Any]:
        rows = db.execute(
            outbox.MESSAGES_FOR,
            {
                "after": 0,
                "until": 100,
                "namespace": namespace,
                "channels": channels,
                "limit": 100,
            },
        ).fetchall()
        return [json.loads(row[4]) for row in rows]

    assert messages_for("/", ["a"]) == ["a", "all"]
    assert messages_for("/chat", ["a", "b"]) == [
        "a",
        "b",
        "all",
        "chat only",
        "a in chat",
    ]
    # No channel: broadcasts only (an empty list is a text array too).
    assert messages_for("/", []) == ["all"]
