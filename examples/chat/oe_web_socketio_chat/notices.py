"""Notices for ERP users, pushed as they are committed: the adapter example.

ERP code publishes a notice in its transaction, to some users or to all::

    from trytond.modules.web_socketio import publish

    publish("notices", {"to": [user.id], "text": "Order SO42 confirmed"})
    publish("notices", {"to": "all", "text": "Maintenance at 18:00"})

A client of ``/notices`` (served by the appliance, entry point group
``oe_web_socketio.namespaces``) connects with its Tryton session and
receives the event ``notices`` with a list of ``{"text", "position"}``;
it acknowledges it (the ack callback of socket.io-client), and only then
are these notices delivered: unacknowledged ones come again::

    socket.on("notices", (notices, ack) => { show(notices); ack(); });
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oe_web_socketio import Namespace
from oe_web_socketio.adapter import Adapter, Message

__all__ = ["NoticesAdapter", "NoticesNamespace"]


class NoticesAdapter(Adapter):
    """The notices of the outbox channel ``notices`` meant for one user."""

    channel = "notices"

    def get(self, messages: Sequence[Message], *args: Any) -> list[Message]:
        (uid,) = args
        return [
            message
            for message in messages
            if isinstance(message.payload, dict)
            and (
                message.payload.get("to") == "all"
                or (
                    isinstance(message.payload.get("to"), list)
                    and uid in message.payload["to"]
                )
            )
        ]

    def format(self, messages: Sequence[Message]) -> Any:
        return [
            {"text": message.payload.get("text"), "position": message.token}
            for message in messages
        ]


class NoticesNamespace(Namespace):
    """One user's stream of notices."""

    allow_anonymous = False
    adapter_class = NoticesAdapter
    #: Seconds a client has to acknowledge before the notices come again.
    ack_timeout = 10.0

    def on_connect(self) -> None:
        self.spawn(self.push)

    def push(self) -> None:
        """Send the user's notices, again until the client acknowledges."""
        while self.connected:
            notices = self.listen(self.uid)
            self.secure_emit("notices", notices)
