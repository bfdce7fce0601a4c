"""Channels: what a socket subscribes to, and who may.

The part of :class:`~oe_web_socketio.namespace.Namespace` that keeps a
socket's channels (python-socketio rooms, :mod:`oe_web_socketio.rooms`)
and checks a client's ``subscribe`` and ``unsubscribe``.

Invariants:

* a channel is a python-socketio room of the socket's namespace, so a
  broadcast on it is one emit, which encodes the packet once;
* ``user:<id>`` is only ever the channel of the socket's own user
  (:meth:`Channels.can_subscribe`);
* a channel never names a database room (its name would start with a NUL
  character, which is not printable) nor another socket's private room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from oe_web_socketio import rooms
from oe_web_socketio.exceptions import EventError
from oe_web_socketio.logs import shorten
from oe_web_socketio.protocol import BAD_REQUEST, FORBIDDEN

if TYPE_CHECKING:
    import socketio

    from oe_web_socketio import events as events_module

#: Channels of this form belong to one user (Tryton's bus uses them).
USER_CHANNEL_PREFIX = "user:"


class Channels:
    """The channels of a socket (a part of
    :class:`~oe_web_socketio.namespace.Namespace`)."""

    server: socketio.Server
    sid: str
    path: str | None
    request: Any  # a namespace.Request
    context: dict[str, Any]
    events: ClassVar[events_module.Events]
    max_channels: ClassVar[int]
    max_channel_length: ClassVar[int]
    _channels: frozenset[str]

    if TYPE_CHECKING:

        @property
        def uid(self) -> int | str | None: ...

        def _sync_rooms(self) -> None: ...

        def _presence_changed(self, event: str, channel: str | None) -> None: ...

    @property
    def channels(self) -> frozenset[str]:
        """The channels this socket is subscribed to."""
        return self._channels

    def can_subscribe(self, channel: str) -> bool:
        """Whether the client may subscribe this socket to *channel*.

        By default: a name of 1 to :attr:`max_channel_length` printable
        characters, and ``user:<id>`` only for the socket's own user.
        """
        if not 0 < len(channel) <= self.max_channel_length:
            return False
        if not channel.isprintable():
            return False
        if channel.startswith(USER_CHANNEL_PREFIX):
            return self.uid is not None and channel == USER_CHANNEL_PREFIX + str(
                self.uid
            )
        return True

    def subscribe(self, channel: str) -> bool:
        """Subscribe this socket to *channel*, unchecked; run the
        ``on_subscribe`` hooks.

        :returns: ``False`` if it already was.
        :raises EventError: *channel* is the id of a socket.
        """
        if channel in self._channels:
            return False
        try:
            rooms.join(self.server, self.sid, self.path, channel)
        except ValueError:
            # python-socketio refuses the private room of another socket.
            raise EventError(
                FORBIDDEN, f"channel {shorten(channel)} is reserved"
            ) from None
        self._channels = self._channels | {channel}
        self._sync_rooms()
        self._presence_changed("join", channel)
        self.events.on_subscribe.send(
            self.request, self, self.context, channel, channels=(channel,)
        )
        return True

    def unsubscribe(self, channel: str) -> bool:
        """Unsubscribe this socket from *channel*; run the
        ``on_unsubscribe`` hooks.

        :returns: ``False`` if it was not subscribed.
        """
        if channel not in self._channels:
            return False
        rooms.leave(self.server, self.sid, self.path, channel)
        self._channels = self._channels - {channel}
        self._sync_rooms()
        self._presence_changed("leave", channel)
        self.events.on_unsubscribe.send(
            self.request, self, self.context, channel, channels=(channel,)
        )
        return True

    def on_subscribe(self, channel: Any) -> bool:
        """The ``subscribe`` event, checked by :meth:`can_subscribe`.

        :returns: ``False`` if the socket already was subscribed.
        """
        channel = channel_argument(channel)
        if not self.can_subscribe(channel):
            raise EventError(FORBIDDEN, f"cannot subscribe to {shorten(channel)}")
        if channel not in self._channels and len(self._channels) >= self.max_channels:
            raise EventError(FORBIDDEN, f"at most {self.max_channels} channels")
        return self.subscribe(channel)

    def on_unsubscribe(self, channel: Any) -> bool:
        """The ``unsubscribe`` event.

        :returns: ``False`` if the socket was not subscribed.
        """
        return self.unsubscribe(channel_argument(channel))


def channel_argument(channel: Any) -> str:
    """*channel* as a client gave it, if it is a string.

    :raises EventError: it is not.
    """
    if not isinstance(channel, str):
        raise EventError(BAD_REQUEST, "a channel must be a string")
    return channel
