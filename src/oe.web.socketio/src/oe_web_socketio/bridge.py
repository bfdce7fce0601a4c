"""The former home of the PostgreSQL outbox's broker, the "database
bridge": :mod:`oe_web_socketio.pubsub.postgres`. Its names stay importable
from here (``Bridge`` is :class:`~oe_web_socketio.pubsub.postgres.OutboxBroker`),
and so do the room names (:mod:`oe_web_socketio.rooms`).

Import this module after :func:`oe_web_socketio.patch.patch`.
"""

from __future__ import annotations

from oe_web_socketio.pubsub.feed import SEEN_XIDS, Outbox
from oe_web_socketio.pubsub.postgres import Consumer
from oe_web_socketio.pubsub.postgres import OutboxBroker as Bridge
from oe_web_socketio.pubsub.publisher import Publisher
from oe_web_socketio.rooms import channel_room, database_room

__all__ = [
    "SEEN_XIDS",
    "Bridge",
    "Consumer",
    "Outbox",
    "Publisher",
    "channel_room",
    "database_room",
]
