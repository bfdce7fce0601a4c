"""Adapters: which database messages a socket takes, and in what shape.

An adapter, as in the seed's web_socketio, names a channel of the outbox
and decides, for one socket, which of the messages published there the
socket takes (:meth:`Adapter.get`) and what the client is sent
(:meth:`Adapter.format`). A namespace that sets
:attr:`~oe_web_socketio.namespace.Namespace.adapter` receives every
message of that channel in a queue of its own, from the moment the socket
connects, and consumes it with
:meth:`~oe_web_socketio.namespace.Namespace.listen`,
:meth:`~oe_web_socketio.namespace.Namespace.secure_emit` and
:meth:`~oe_web_socketio.namespace.Namespace.validate`::

    class Orders(Adapter):
        channel = "sale.order"

        def get(self, messages, uid):
            return [m for m in messages if uid in m.payload["followers"]]

        def format(self, messages):
            return [m.payload["id"] for m in messages]

    class Live(Namespace):
        adapter = Orders

        def on_connect(self):
            self.spawn(self.push)

        def push(self):
            while True:
                ids = self.listen(self.uid)           # waits
                self.secure_emit("orders", ids)       # validated by the ack

Invariants of an :class:`AdapterQueue`:

* :meth:`~AdapterQueue.take` returns the messages offered last time again
  until they are validated: a message is delivered when the client
  acknowledged it, and offered again otherwise (when the socket
  disconnects first, it is gone with the socket: a new socket resumes by
  position, see :mod:`oe_web_socketio.resume`);
* messages are kept in position order; at most
  :attr:`AdapterQueue.max_pending` wait, the oldest are dropped beyond
  (with one log line), so a socket that never listens costs bounded memory;
* :meth:`Adapter.get` must return messages it was given, unchanged (a
  subset, in order): they are the ones marked delivered.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import gevent.event

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Message:
    """A message of the outbox, as adapters see it.

    :ivar database: the database it was published in.
    :ivar position: its position in the outbox (commit order).
    :ivar token: its position as clients see it (``"<epoch>:<n>"``).
    :ivar channel: the channel it was published on.
    :ivar payload: the message itself (decoded JSON).
    """

    database: str
    position: int
    token: str
    channel: str
    payload: Any


class AdapterSocket(Protocol):
    """What an adapter knows of its socket (a
    :class:`~oe_web_socketio.namespace.Namespace`): who is on the other
    end, and where."""

    @property
    def sid(self) -> str: ...

    @property
    def path(self) -> str | None: ...

    @property
    def uid(self) -> int | str | None: ...

    @property
    def login(self) -> str | None: ...

    @property
    def db(self) -> str | None: ...

    @property
    def database(self) -> str | None: ...

    @property
    def channels(self) -> frozenset[str]: ...

    @property
    def context(self) -> dict[str, Any]: ...


class Adapter:
    """Chooses and shapes, for one socket, the messages of :attr:`channel`.

    One instance per socket (:attr:`socket`), created when it connects.
    """

    #: The channel of the outbox whose messages this adapter receives.
    channel: ClassVar[str]

    def __init__(self, socket: AdapterSocket) -> None:
        self.socket = socket

    def get(self, messages: Sequence[Message], *args: Any) -> list[Message]:
        """The messages, among *messages*, that the socket takes, returned
        unchanged; *args* are those of
        :meth:`~oe_web_socketio.namespace.Namespace.listen`. All of them by
        default."""
        return list(messages)

    def format(self, messages: Sequence[Message]) -> Any:
        """What the client is sent for *messages*: their payloads, by
        default."""
        return [message.payload for message in messages]


class AdapterQueue:
    """The messages of an adapter's channel waiting for one socket."""

    #: Most messages waiting; the oldest are dropped beyond.
    max_pending = 1000

    def __init__(self) -> None:
        self._pending: list[Message] = []
        #: The messages taken last and not yet validated.
        self.offered: list[Message] = []
        self._arrived = gevent.event.Event()
        self.dropped = 0

    def offer(self, message: Message) -> None:
        """Queue *message* (called by the bridge; never blocks)."""
        self._pending.append(message)
        if len(self._pending) > self.max_pending:
            del self._pending[0]
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "Adapter queue full: %d message(s) dropped so far", self.dropped
                )
        self._arrived.set()

    def take(
        self, adapter: Adapter, args: tuple[Any, ...], timeout: float | None
    ) -> list[Message]:
        """The messages for the socket: those offered last time if not
        validated, else the next ones :meth:`Adapter.get` chooses, waiting
        for them up to *timeout* seconds (``None``: for ever).

        :returns: the messages, empty on timeout.
        """
        if self.offered:
            return list(self.offered)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._pending:
                pending, self._pending = self._pending, []
                self._arrived.clear()
                chosen = adapter.get(pending, *args)
                self._check(chosen, pending)
                if chosen:
                    self.offered = list(chosen)
                    return list(chosen)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            self._arrived.wait(remaining)

    def validate(self, delivered: bool = True) -> None:
        """Mark the messages offered last as delivered (or, with
        ``False``, as to be offered again)."""
        if delivered:
            self.offered = []

    @staticmethod
    def _check(chosen: Sequence[Message], given: Sequence[Message]) -> None:
        ids = {id(message) for message in given}
        if any(id(message) not in ids for message in chosen):
            raise TypeError("Adapter.get must return messages it was given, unchanged")
