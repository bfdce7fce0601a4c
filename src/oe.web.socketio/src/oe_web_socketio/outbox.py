"""The outbox: messages published in a database transaction, in SQL.

Whoever holds a connection to the database publishes with
:func:`publish` (or :func:`broadcast`, :func:`send`): the message is a row
of the table ``web_socketio_outbox``, and a ``NOTIFY`` on the channel
:data:`NOTIFY_CHANNEL` wakes the servers up. Both belong to the caller's
transaction, so a message exists, and is delivered, if and only if that
transaction commits. The Tryton module ``web_socketio`` calls these with
the cursor of the current Tryton transaction; any other process may call
them with a DB-API cursor of its own (psycopg's ``%s`` parameters).

Invariants:

* a row is written with ``position`` ``NULL`` and gets its position when
  its transaction commits: a deferred constraint trigger
  (:data:`POSITION_TRIGGER`) takes the advisory lock :data:`LOCK_KEY`
  and gives the rows of the transaction the next positions, in insertion
  order; the lock is held until the commit is visible, so positions
  follow commit order and become visible in that order (a reader that
  sees position *n* sees every committed position below it): a
  transaction that began first and committed last is positioned last, not
  skipped. A server only reads (:data:`NEW_MESSAGES`): one round trip
  for whatever notifications arrived together, no transaction of its own;
* an outbox created before that trigger (its Tryton module not updated
  since) has rows committed without a position: servers give them
  positions when the notification comes (:data:`ASSIGN_POSITIONS`, under
  the same lock, in the order PostgreSQL delivers notifications, which is
  commit order), as they did before;
* positions increase with commit order and are never reused (a
  transaction that fails at commit after its trigger ran leaves a hole,
  never a duplicate); a position names a message for as long as it is
  kept (see :data:`PRUNE`);
* the payload of ``NOTIFY`` is only the transaction id, never the message:
  a message of any size (1 MB and more) travels through the table, and
  the notifications of one transaction collapse into one (PostgreSQL drops
  duplicates within a transaction);
* pruning is serialised between servers by another advisory lock
  (:data:`PRUNE_LOCK_KEY`), never the one publishers take at commit, so
  several servers may share a database and a commit never waits for a
  prune;
* :data:`SCHEMA` is idempotent: running it again changes nothing.

Caveat: a transaction that runs ``SET CONSTRAINTS ALL IMMEDIATE`` fires
the trigger at each insert, not at commit: its rows are positioned all
the same, in order, but it holds the lock from its first message to its
end, and the commits of other publishing transactions wait for it.
(Publishing transactions are serialised at commit anyway: PostgreSQL
queues the notifications of one committing transaction at a time.)

Messages must be JSON (``json.dumps`` without help): what is published is
what every client receives, in every language.

This module does no I/O of its own and imports neither gevent nor psycopg:
the Tryton module imports it inside trytond.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

#: The ``LISTEN``/``NOTIFY`` channel that announces new messages.
NOTIFY_CHANNEL = "oe_web_socketio"

#: The table of messages.
TABLE = "web_socketio_outbox"

#: Key of the advisory lock taken to assign positions (at commit, by
#: :data:`POSITION_TRIGGER`; by servers for rows committed without one).
LOCK_KEY = 0x6F65_7773_696F  # "oewsio"

#: Key of the advisory lock servers take to prune.
PRUNE_LOCK_KEY = 0x6F65_7773_7072  # "oewspr"

#: The deferred constraint trigger, and its function, that position the
#: rows of a transaction when it commits.
POSITION_TRIGGER = f"{TABLE}_position"

#: The setting, local to a transaction, in which :data:`POSITION_TRIGGER`
#: keeps the highest id it positioned.
POSITIONED_SETTING = "oe_web_socketio.positioned"

#: Longest channel or namespace name accepted (as a subscriber may use).
MAX_NAME_LENGTH = 200

#: Creates the tables, idempotent. The one row of the state table holds
#: ``epoch``, which names this incarnation of the outbox (a client position
#: from another database, or from before the table was created anew,
#: carries another epoch), and ``pruned_through``, the highest position
#: deleted by :data:`PRUNE`.
SCHEMA = f"""\
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    position bigint UNIQUE,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    channel text,
    namespace text,
    sid text,
    payload json NOT NULL,
    create_date timestamp NOT NULL
        DEFAULT (CURRENT_TIMESTAMP AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS {TABLE}_unpositioned
    ON {TABLE} (xid) WHERE position IS NULL;
CREATE INDEX IF NOT EXISTS {TABLE}_channel
    ON {TABLE} (channel, position) WHERE sid IS NULL;
CREATE SEQUENCE IF NOT EXISTS {TABLE}_position_seq;
CREATE TABLE IF NOT EXISTS {TABLE}_state (
    epoch uuid NOT NULL,
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO {TABLE}_state (epoch)
    SELECT gen_random_uuid()
    WHERE NOT EXISTS (SELECT 1 FROM {TABLE}_state);
CREATE OR REPLACE FUNCTION {POSITION_TRIGGER}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- The highest id this transaction positioned (a setting of the
    -- transaction, undone with it or with its savepoint): the first row
    -- positions them all, the others return at once.
    positioned bigint := nullif(
        current_setting('{POSITIONED_SETTING}', true), '')::bigint;
BEGIN
    IF NEW.id <= positioned THEN
        RETURN NULL;
    END IF;
    -- Held until the commit is visible: positions follow commit order.
    PERFORM pg_advisory_xact_lock({LOCK_KEY});
    WITH done AS (
        UPDATE {TABLE} AS o SET position = p.position
        FROM (
            SELECT q.id, nextval('{TABLE}_position_seq') AS position
            FROM (
                SELECT id FROM {TABLE}
                WHERE xid = pg_current_xact_id() AND position IS NULL
                ORDER BY id
            ) AS q
        ) AS p
        WHERE o.id = p.id
        RETURNING o.id
    )
    SELECT max(id) INTO positioned FROM done;
    PERFORM set_config('{POSITIONED_SETTING}', positioned::text, true);
    RETURN NULL;
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = '{TABLE}'::regclass AND tgname = '{POSITION_TRIGGER}'
    ) THEN
        CREATE CONSTRAINT TRIGGER {POSITION_TRIGGER}
            AFTER INSERT ON {TABLE}
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION {POSITION_TRIGGER}();
    END IF;
END
$$;
"""

#: Whether the rows of the outbox are positioned at commit (its
#: :data:`POSITION_TRIGGER` exists and is enabled); if not, servers
#: position them (:data:`ASSIGN_POSITIONS`).
POSITIONS_AT_COMMIT = f"""\
SELECT EXISTS (
    SELECT 1 FROM pg_trigger
    WHERE tgrelid = to_regclass('{TABLE}') AND tgname = '{POSITION_TRIGGER}'
        AND tgenabled <> 'D')"""

_INSERT = (
    f"INSERT INTO {TABLE} (channel, namespace, sid, payload) VALUES (%s, %s, %s, %s)"
)
_NOTIFY = "SELECT pg_notify(%s, pg_current_xact_id()::text)"

#: Positions the committed rows of the given transactions (a text array of
#: xids, in commit order), rows of one transaction in insertion order; the
#: ordered sub-select makes ``nextval`` follow that order. For an outbox
#: without :data:`POSITION_TRIGGER` only.
ASSIGN_POSITIONS = f"""\
UPDATE {TABLE} AS o SET position = p.position
FROM (
    SELECT q.id, nextval('{TABLE}_position_seq') AS position
    FROM (
        SELECT m.id
        FROM unnest(%s::text[]) WITH ORDINALITY AS x(xid, n)
        JOIN {TABLE} AS m ON m.xid = x.xid::xid8 AND m.position IS NULL
        ORDER BY x.n, m.id
    ) AS q
) AS p
WHERE o.id = p.id
RETURNING o.xid::text"""

#: Positions every committed row still without one, oldest transaction
#: first: the rows whose notification no server received (all were down).
ASSIGN_MISSED_POSITIONS = f"""\
UPDATE {TABLE} AS o SET position = p.position
FROM (
    SELECT q.id, nextval('{TABLE}_position_seq') AS position
    FROM (
        SELECT id FROM {TABLE} WHERE position IS NULL ORDER BY xid, id
    ) AS q
) AS p
WHERE o.id = p.id"""

#: The highest position given so far (0 before the first), by a
#: transaction that may not have committed yet.
LAST_POSITION = f"""\
SELECT CASE WHEN is_called THEN last_value ELSE 0 END
FROM {TABLE}_position_seq"""

#: Whether the outbox exists (its state table is created last).
HAS_OUTBOX = f"SELECT to_regclass('{TABLE}_state') IS NOT NULL"

#: The epoch of the outbox and the highest position pruned.
STATE = f"SELECT epoch::text, pruned_through FROM {TABLE}_state"

#: The highest position kept, or the highest pruned when none is kept.
LAST_DELIVERABLE = f"""\
SELECT coalesce(
    (SELECT max(position) FROM {TABLE}),
    (SELECT pruned_through FROM {TABLE}_state))"""

#: The columns of a message: position, channel, namespace, sid, payload.
COLUMNS = "position, channel, namespace, sid, payload::text"

#: Messages after a position, in order, with their transaction id and
#: the seconds since their row was written (``create_date``, the start of
#: the transaction that wrote it: for a short transaction, its commit),
#: by the database's clock: what a server delivers live.
NEW_MESSAGES = f"""\
SELECT {COLUMNS}, xid::text,
    extract(epoch FROM (clock_timestamp() AT TIME ZONE 'UTC') - create_date)::float8
FROM {TABLE}
WHERE position > %s
ORDER BY position LIMIT %s"""

#: Messages after a position, up to another, in order.
MESSAGES_BETWEEN = f"""\
SELECT {COLUMNS} FROM {TABLE}
WHERE position > %s AND position <= %s
ORDER BY position LIMIT %s"""

#: Messages after a position up to another for a socket: on one of its
#: channels, or to its whole namespace, in its namespace or in every one.
MESSAGES_FOR = f"""\
SELECT {COLUMNS} FROM {TABLE}
WHERE position > %(after)s AND position <= %(until)s
    AND sid IS NULL
    AND (namespace IS NULL OR namespace = %(namespace)s)
    AND (channel IS NULL OR channel = ANY(%(channels)s))
ORDER BY position LIMIT %(limit)s"""

#: The last messages on a channel up to a position, for a namespace,
#: oldest first (an index on the channel and the position serves it).
RECENT_ON = f"""\
SELECT {COLUMNS} FROM (
    SELECT {COLUMNS} FROM {TABLE}
    WHERE channel = %(channel)s AND position <= %(until)s AND sid IS NULL
        AND (namespace IS NULL OR namespace = %(namespace)s)
    ORDER BY channel DESC, position DESC LIMIT %(limit)s
) AS recent
ORDER BY position"""

#: Messages on a channel after a position up to another, in order.
MESSAGES_ON = f"""\
SELECT {COLUMNS} FROM {TABLE}
WHERE position > %(after)s AND position <= %(until)s
    AND sid IS NULL AND channel = %(channel)s
ORDER BY position LIMIT %(limit)s"""

#: Deletes the messages at or below a position, and says so in the state.
PRUNE = f"""\
WITH done AS (DELETE FROM {TABLE} WHERE position <= %(through)s)
UPDATE {TABLE}_state SET pruned_through = %(through)s
WHERE pruned_through < %(through)s"""

#: Which of the transaction ids given (a text array) have rows.
XIDS_WITH_ROWS = f"""\
SELECT DISTINCT xid::text FROM {TABLE} WHERE xid = ANY(%s::text[]::xid8[])"""

#: The position at and below which messages are too old or too many
#: (``NULL`` when none is), given a maximum age in seconds and a count to
#: keep. Too old means below the lowest young message: ``create_date`` is
#: when the transaction wrote the row, so a transaction that began long
#: ago and committed last is old at the top; it must not take younger
#: messages with it.
PRUNE_THRESHOLD = f"""\
SELECT greatest(
    coalesce(
        (SELECT min(position) - 1 FROM {TABLE}
            WHERE position IS NOT NULL
            AND create_date >= (CURRENT_TIMESTAMP AT TIME ZONE 'UTC')
                - make_interval(secs => %s)),
        (SELECT max(position) FROM {TABLE})),
    (SELECT max(position) - %s FROM {TABLE}))"""


class Cursor(Protocol):
    """What this module needs of a DB-API cursor."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


def publish(
    cursor: Cursor,
    message: Any,
    channel: str | None = None,
    *,
    namespace: str | None = None,
    sid: str | None = None,
) -> None:
    """Publish *message* in the transaction of *cursor*.

    It is delivered when, and only if, that transaction commits: on
    *channel* to the sockets subscribed to it, or without a channel to
    every socket (of *namespace*; of every namespace when ``None``), of
    this database, on every server. A message to a channel nobody
    subscribes to is kept all the same, for clients that resume later
    (see :meth:`oe_web_socketio.namespace.Namespace.on_resume`), until it
    is pruned.

    :param sid: send to this socket only (an id of *namespace*, which is
        then required); never kept for resuming clients.
    :raises TypeError: *message* is not JSON-serialisable.
    :raises ValueError: a name is empty or too long, or *sid* is given
        without *namespace*.
    """
    for what, name in (("channel", channel), ("namespace", namespace), ("sid", sid)):
        if name is not None and not (
            isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH
        ):
            raise ValueError(
                f"{what} must be a string of 1 to {MAX_NAME_LENGTH} characters, "
                f"got {name!r:.80}"
            )
    if sid is not None and namespace is None:
        raise ValueError("a message to a socket (sid) needs its namespace")
    cursor.execute(_INSERT, (channel, namespace, sid, encode(message)))
    cursor.execute(_NOTIFY, (NOTIFY_CHANNEL,))


def encode(message: Any) -> str:
    """*message* as the outbox keeps it: compact JSON, without help.

    :raises TypeError: *message* is not JSON (a set, a ``datetime``, NaN).
    """
    try:
        return json.dumps(
            message, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a message must be JSON: {exc}") from exc


def broadcast(cursor: Cursor, message: Any, namespace: str | None = None) -> None:
    """Publish *message* to every socket (of *namespace*) in the
    transaction of *cursor* (see :func:`publish`)."""
    publish(cursor, message, namespace=namespace)


def broadcast_channel(
    cursor: Cursor, message: Any, channel: str, namespace: str | None = None
) -> None:
    """Publish *message* on *channel* in the transaction of *cursor* (see
    :func:`publish`)."""
    publish(cursor, message, channel, namespace=namespace)


def send(cursor: Cursor, sid: str, message: Any, namespace: str = "/") -> None:
    """Publish *message* to the socket *sid* of *namespace* in the
    transaction of *cursor* (see :func:`publish`)."""
    publish(cursor, message, namespace=namespace, sid=sid)


def ensure_schema(cursor: Cursor) -> None:
    """Create the outbox tables, and the trigger that positions rows at
    commit, if they are missing (in the transaction of *cursor*,
    serialised with other servers by the advisory lock)."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    cursor.execute(SCHEMA)


def xids(payloads: Iterable[str]) -> list[str]:
    """The transaction ids of notification *payloads*, in order, once
    each; payloads that are not one are left out (see :func:`is_xid`)."""
    seen: dict[str, None] = {}
    for payload in payloads:
        if is_xid(payload):
            seen.setdefault(payload, None)
    return list(seen)


def is_xid(payload: str) -> bool:
    """Whether *payload* is a transaction id as :func:`publish` notifies."""
    return payload.isascii() and payload.isdigit() and len(payload) <= 20


def format_position(epoch: str, position: int) -> str:
    """The position clients see: ``"<epoch>:<position>"``."""
    return f"{epoch}:{position}"


def parse_position(token: Any) -> tuple[str, int] | None:
    """``(epoch, position)`` of a client position, or ``None`` if *token*
    is not one."""
    if not isinstance(token, str) or len(token) > 80:
        return None
    epoch, sep, number = token.rpartition(":")
    if not sep or not epoch or not number.isascii() or not number.isdigit():
        return None
    return epoch, int(number)
