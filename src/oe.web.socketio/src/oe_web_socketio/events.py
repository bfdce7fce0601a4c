"""Event hooks in the manner of webpy-socketio and django-socketio.

A hook is a function that runs when something happens to a socket::

    from oe_web_socketio import events

    @events.on_message(channel="^room-")
    def chat(request, socket, context, message):
        socket.send_and_broadcast_channel(message)

Every hook receives ``(request, socket, context, ...)``: the handshake
(:class:`~oe_web_socketio.namespace.Request`), the socket (the
per-connection :class:`~oe_web_socketio.namespace.Namespace` instance) and
``context``, a dict that lives as long as the connection. The hooks and
their extra arguments:

================== ======================== =================================
hook               extra arguments          runs
================== ======================== =================================
``on_connect``     —                        once the socket is connected
``on_message``     ``message``              for each ``message`` event
``on_subscribe``   ``channel``              after the socket joins a channel
``on_unsubscribe`` ``channel``              after it leaves one, and for each
                                            channel left at disconnection
``on_error``       ``exception``            when a handler, hook or spawned
                                            greenlet of the socket fails
``on_disconnect``  —                        when the socket disconnects
``on_finish``      —                        last, when all is over
================== ======================== =================================

Every hook but ``on_connect`` may be bound to channels by a regular
expression, matched with :func:`re.match` (anchored at the start, as in
django-socketio). A bound hook runs when its pattern matches *the channel
concerned*: the channel subscribed to or left, the channel a message was
sent on; for a message sent without a channel and for the other hooks, any
channel the socket is in. Unlike django-socketio, a hook without a pattern
runs for every socket, subscribed to channels or not.

Hooks are kept in an :class:`Events` registry. The module-level decorators
(``events.on_message`` …) register in :data:`default`, the registry of every
:class:`~oe_web_socketio.namespace.Namespace` unless its ``events`` class
attribute names another one.

Hooks run in registration order, in the greenlet handling the event. An
exception stops the hooks of that event; the caller reports it (log,
``on_error`` hooks, an error to the client).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, overload

from oe_web_socketio.exceptions import HookError

Hook = Callable[..., Any]


class Event:
    """One kind of hook: the handlers registered for it, in order.

    Use an instance as a decorator, bare or with a ``channel`` pattern.

    :param name: the name of the hook, e.g. ``"on_message"``.
    :param supports_channels: whether handlers may be bound to channels.
    """

    def __init__(self, name: str, supports_channels: bool = True) -> None:
        self.name = name
        self.supports_channels = supports_channels
        self.handlers: list[tuple[Hook, re.Pattern[str] | None]] = []

    def __repr__(self) -> str:
        return f"<Event {self.name}: {len(self.handlers)} handler(s)>"

    @overload
    def __call__(self, handler: Hook, *, channel: str | None = None) -> Hook: ...

    @overload
    def __call__(
        self, handler: None = None, *, channel: str | None = None
    ) -> Callable[[Hook], Hook]: ...

    def __call__(
        self, handler: Hook | None = None, *, channel: str | None = None
    ) -> Hook | Callable[[Hook], Hook]:
        """Register *handler*, or return a decorator that does.

        :param channel: a regular expression; the handler then runs only
            for the channels it matches.
        :raises HookError: this hook takes no channel, or *channel* is not
            a valid regular expression.
        """
        if handler is None:
            return lambda handler: self(handler, channel=channel)
        self.register(handler, channel)
        return handler

    def register(self, handler: Hook, channel: str | None = None) -> None:
        """Register *handler*, bound to the channels *channel* matches."""
        pattern = None
        if channel is not None:
            if not self.supports_channels:
                raise HookError(f"{self.name} hooks cannot be bound to a channel")
            try:
                pattern = re.compile(channel)
            except re.error as exc:
                raise HookError(
                    f"invalid channel pattern {channel!r} for {self.name}: {exc}"
                ) from None
        self.handlers.append((handler, pattern))

    def send(
        self,
        request: Any,
        socket: Any,
        context: dict[str, Any],
        *args: Any,
        channels: Iterable[str] | None = None,
    ) -> None:
        """Run the handlers concerned, in order.

        :param channels: the channels a bound handler is matched against;
            by default every channel *socket* is in.
        """
        for handler, pattern in self.handlers:
            if pattern is not None:
                candidates = socket.channels if channels is None else channels
                if not any(pattern.match(channel) for channel in candidates):
                    continue
            handler(request, socket, context, *args)


class Events:
    """A registry of hooks: one :class:`Event` per kind of hook."""

    def __init__(self) -> None:
        self.on_connect = Event("on_connect", supports_channels=False)
        self.on_message = Event("on_message")
        self.on_subscribe = Event("on_subscribe")
        self.on_unsubscribe = Event("on_unsubscribe")
        self.on_error = Event("on_error")
        self.on_disconnect = Event("on_disconnect")
        self.on_finish = Event("on_finish")

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{event.name}={len(event.handlers)}" for event in vars(self).values()
        )
        return f"<Events {counts}>"


#: The registry of hooks used unless a namespace names another one.
default = Events()

on_connect = default.on_connect
on_message = default.on_message
on_subscribe = default.on_subscribe
on_unsubscribe = default.on_unsubscribe
on_error = default.on_error
on_disconnect = default.on_disconnect
on_finish = default.on_finish
