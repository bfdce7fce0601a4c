"""The in-process broker: delivery for a host without a database (a plain
WSGI application), in one process.

What a database is here: such a host has exactly one, in memory, named
as the server's first configured database
(:attr:`~oe_web_socketio.config.Config.databases`, ``oe`` by default);
every socket (authenticated or not: the host's identities name no
database) and every long poll belongs to it.

:meth:`LocalBroker.publish` gives a message the next position of that
database and hands it to the :class:`~oe_web_socketio.pubsub.deliver.Deliverer`
at once: positions are given and delivered in one go, without a yield,
as the outbox broker does, so :mod:`oe_web_socketio.resume` keeps its
guarantee (no gap, no duplicate).

Guarantees, beside the outbox's (see :mod:`oe_web_socketio.pubsub`):

* ordering: as the outbox's, in publishing order;
* not durable: messages live in this process's memory; the last
  :attr:`~oe_web_socketio.config.Config.history_max_count` of them, none
  older than :attr:`~oe_web_socketio.config.Config.history_max_age`
  seconds, are kept for resuming clients and long polls;
* replay: within that history; older positions, positions of another
  epoch (each start of the process draws a new one, so a client that
  resumes across a restart is told to resync rather than missing what
  was published before it) and anything not a position raise
  :class:`~oe_web_socketio.exceptions.Resync`;
* one process only: another process (worker) of the same application
  neither receives nor replays these messages.
"""

from __future__ import annotations

import collections
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import gevent

from oe_web_socketio import outbox
from oe_web_socketio.adapter import Message
from oe_web_socketio.exceptions import DatabaseUnavailable, Resync
from oe_web_socketio.pubsub import Address, Replayed
from oe_web_socketio.pubsub.deliver import Deliverer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import socketio

    from oe_web_socketio.directory import SocketDirectory
    from oe_web_socketio.pubsub import Listening


class LocalBroker:
    """The :class:`~oe_web_socketio.pubsub.Broker` of one process without
    a database.

    :param server: the python-socketio server.
    :param directory: where the connected sockets are.
    :param database: the name of the one database (see the module).
    :param history_max_age: seconds a message is kept for replay.
    :param history_max_count: most messages kept for replay.
    """

    #: Nothing survives a restart of the process.
    durable = False
    #: Messages have positions and can be replayed, within the history.
    replays = True

    def __init__(
        self,
        server: socketio.Server,
        directory: SocketDirectory,
        database: str,
        *,
        history_max_age: float = 86_400.0,
        history_max_count: int = 100_000,
    ) -> None:
        self.database = database
        self.history_max_age = history_max_age
        self.history_max_count = history_max_count
        #: Drawn at each start of the process: tokens of another are refused.
        self.epoch = "local-" + secrets.token_hex(8)
        self.deliverer = Deliverer(server, directory)
        #: The position of the last message published (and delivered).
        self.delivered = 0
        #: The highest position dropped from :attr:`history` (0: none).
        self.dropped = 0
        #: ``(position, address, payload, monotonic time)``, oldest first.
        self.history: collections.deque[tuple[int, Address, Any, float]] = (
            collections.deque()
        )

    @property
    def default_database(self) -> str:
        """The one database: every socket's."""
        return self.database

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def counters(self) -> dict[str, Callable[[], Any]]:
        """``local``: the position and history of the database."""
        return {
            "local": lambda: {
                self.database: {"delivered": self.delivered, "kept": len(self.history)}
            }
        }

    def _check(self, database: str) -> None:
        if database != self.database:
            raise DatabaseUnavailable(database, "not a database of this server")

    def _forget(self, now: float) -> None:
        """Drop what is beyond the history's count or age."""
        history = self.history
        oldest = now - self.history_max_age
        while history and (
            len(history) > self.history_max_count or history[0][3] < oldest
        ):
            self.dropped = history.popleft()[0]

    def publish(self, address: Address, payload: Any) -> None:
        """Give *payload* the next position and deliver it, without a
        yield in between.

        :raises DatabaseUnavailable: *address* names another database.
        :raises TypeError: *payload* is not JSON (as the outbox refuses it).
        """
        self._check(address.database)
        # What subscribers get is a copy of what was published, as from the
        # outbox, checked before it takes a position: a payload that cannot
        # be encoded is refused, never kept for replay.
        payload = json.loads(outbox.encode(payload))
        now = time.monotonic()
        position = self.delivered + 1
        if address.sid is None:  # messages to a socket are live only
            self.history.append((position, address, payload, now))
        self._forget(now)
        # Taken before delivering (nothing yields in between).
        self.delivered = position
        self.deliverer.deliver(
            self.database,
            position,
            self.token(self.database, position),
            payload,
            channel=address.channel,
            namespace=address.namespace,
            sid=address.sid,
            paths=self.deliverer.directory.paths(),
        )

    def head(self, database: str) -> int:
        """The position of the last message published."""
        self._check(database)
        return self.delivered

    def token(self, database: str, position: int) -> str:
        """*position* as clients see it: ``"<epoch>:<position>"``."""
        return outbox.format_position(self.epoch, position)

    def locate(self, database: str, token: Any) -> int:
        """The position of *token*.

        :raises Resync: not a position, one of another epoch (another
            process, or before a restart), or one never given.
        """
        self._check(database)
        parsed = outbox.parse_position(token)
        if parsed is None:
            raise Resync("not a position")
        epoch, position = parsed
        if epoch != self.epoch:
            raise Resync("a position of another database")
        if position > self.delivered:
            # Positions are given at once: a later one was never given.
            raise Resync("a position from the future")
        return position

    def wait_until(self, database: str, position: int, timeout: float) -> bool:
        """Whether *position* is published (at once: nothing is pending)."""
        return position <= self.head(database)

    def replay(
        self,
        database: str,
        after: int,
        until: int,
        *,
        namespace: str | None,
        channels: Iterable[str],
    ) -> list[Replayed]:
        """The kept messages in ``(after, until]`` for a socket of
        *namespace* on *channels* (and the broadcasts), in order.

        :raises Resync: some of them were dropped from the history.
        """
        self._check(database)
        self._forget(time.monotonic())
        if after < self.dropped:
            raise Resync("past the retention window")
        wanted = set(channels)
        return [
            Replayed(position, self.token(database, position), a.channel, payload)
            for position, a, payload, _ in self.history
            if after < position <= until
            and (a.namespace is None or a.namespace == namespace)
            and (a.channel is None or a.channel in wanted)
        ]

    def recent(
        self, database: str, channel: str, limit: int, *, namespace: str | None
    ) -> list[Replayed]:
        """The last *limit* kept messages on *channel* for *namespace*,
        oldest first."""
        self._check(database)
        self._forget(time.monotonic())
        found: list[Replayed] = []
        for position, a, payload, _ in reversed(self.history):
            if len(found) >= limit:
                break
            if (
                a.channel == channel
                and a.sid is None
                and (a.namespace is None or a.namespace == namespace)
            ):
                found.append(
                    Replayed(position, self.token(database, position), channel, payload)
                )
        found.reverse()
        return found

    def attach(self, socket: Listening) -> None:
        """Deliver the messages of its adapter's channel to *socket*."""
        self.deliverer.attach(socket)

    def detach(self, socket: Listening) -> None:
        """Stop delivering adapter messages to *socket*."""
        self.deliverer.detach(socket)

    def wait_messages(
        self, database: str, channel: str, since: Any, timeout: float
    ) -> list[Message]:
        """The kept messages on *channel* after the position *since*, or,
        when there are none (or *since* is not a kept position of this
        process), the next one, waited for up to *timeout* seconds.

        :raises TimeoutError: nothing came in time.
        :raises DatabaseUnavailable: *database* is not this server's.
        """
        self._check(database)
        parsed = outbox.parse_position(since)
        if parsed is not None and parsed[0] == self.epoch:
            after = parsed[1]
            found = [
                Message(database, position, self.token(database, position), channel, p)
                for position, a, p, _ in self.history
                if position > after and a.channel == channel
            ]
            if found:
                return found
        with self.deliverer.waiting(database, channel) as waiter:
            try:
                return list(waiter.get(timeout=timeout))
            except gevent.Timeout:
                raise TimeoutError(f"no message on {channel!r}") from None
