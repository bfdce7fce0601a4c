"""What clients see of this server beyond Socket.IO itself. No I/O here.

Every refusal has one shape, whatever its cause::

    {"error": {"code": "forbidden", "message": "event 'x' is not allowed"}}

It is the acknowledgement of the event when the client asked for one, and
otherwise the argument of an ``error`` event (:data:`ERROR_EVENT`) sent to
that socket alone. The codes are the constants ``MALFORMED`` …
``INTERNAL_ERROR`` below; a refused connection carries one too, as
``{"code": …}``, the ``data`` of the client's ``connect_error``. Messages
are for humans and may change.

python-socketio does not tell an event handler how big the packet was nor
whether the client waits for an acknowledgement. :class:`Packet`, given to
:class:`socketio.Server` as its ``serializer`` (the documented hook for
custom packet decoding), records both on the event name it decodes: the
name is an :class:`IncomingEvent`, a :class:`str` with ``size`` and
``ack`` attributes, that python-socketio hands on unchanged to the
namespace's ``trigger_event``. A client's event can thereby be told apart
from the ``connect`` and ``disconnect`` events python-socketio itself
triggers.

Invariants of :class:`Packet`:

* an ``EVENT`` packet whose header (namespace, id) is readable is always
  decoded, into an :class:`IncomingEvent` whose ``error`` says what is
  wrong when its payload is not JSON or not ``[name: str, *args]``; so
  such a packet is answered with :data:`MALFORMED` like any other bad
  event;
* every other decoding failure raises :class:`MalformedPacketError`.
"""

from __future__ import annotations

from typing import Any, Self

from engineio import json as engineio_json
from socketio import packet as sio_packet

from oe_web_socketio.exceptions import OeWebSocketIOError

#: The event that carries an error to a client that asked for no
#: acknowledgement.
ERROR_EVENT = "error"

#: The event of messages, in both directions: ``(message)`` or
#: ``(message, channel)``.
MESSAGE_EVENT = "message"

#: Error codes.
MALFORMED = "malformed"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNKNOWN_EVENT = "unknown_event"
UNKNOWN_NAMESPACE = "unknown_namespace"
FORBIDDEN = "forbidden"
BAD_REQUEST = "bad_request"
AUTHENTICATION_FAILED = "authentication_failed"
UNAVAILABLE = "unavailable"
INTERNAL_ERROR = "internal_error"

#: Event names a client may never send: python-socketio triggers them.
RESERVED_EVENTS = frozenset({"connect", "disconnect"})


def error_payload(code: str, message: str) -> dict[str, dict[str, str]]:
    """The payload telling a client its event was refused."""
    return {"error": {"code": code, "message": message}}


class EventError(OeWebSocketIOError):
    """An event is refused; raise it from a handler to answer an error.

    The client receives :func:`error_payload` of *code* and *message*, the
    server logs one line without a traceback: it is the client's fault.

    :param code: one of the codes of this module, or the integrator's own.
    :param message: what the client is told.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class MalformedPacketError(OeWebSocketIOError, ValueError):
    """A packet cannot be decoded and cannot be answered.

    A :class:`ValueError`, as python-socketio's own decoding errors are.
    """


class IncomingEvent(str):
    """The name of an event a client sent, with facts about its packet.

    :ivar size: bytes (characters) of the packet, attachments included.
    :ivar ack: whether the client waits for an acknowledgement.
    :ivar error: why the packet is malformed, or ``None``.
    """

    size: int
    ack: bool
    error: str | None

    def __new__(
        cls, name: str, *, size: int, ack: bool, error: str | None = None
    ) -> Self:
        event = super().__new__(cls, name)
        event.size = size
        event.ack = ack
        event.error = error
        return event


class PayloadError(ValueError):
    """The JSON payload of a packet cannot be decoded."""


class _PayloadJSON:
    """python-engineio's JSON module, whose ``loads`` tells its failures
    apart from those of the packet header (integers over 100 digits are
    refused there, nesting too deep for the decoder is refused here)."""

    dumps = staticmethod(engineio_json.dumps)

    @staticmethod
    def loads(*args: Any, **kwargs: Any) -> Any:
        try:
            return engineio_json.loads(*args, **kwargs)
        except (ValueError, RecursionError) as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None


class Packet(sio_packet.Packet):
    """python-socketio's packet, decoding events as :class:`IncomingEvent`.

    Only decoding changes; encoding is python-socketio's.
    """

    json = _PayloadJSON

    def decode(self, encoded_packet: str) -> int:
        """Decode *encoded_packet*; return the number of attachments due.

        :raises MalformedPacketError: the packet cannot be decoded and is
            not an ``EVENT`` whose header could be read.
        """
        if not isinstance(encoded_packet, str):
            # python-socketio hands binary messages to add_attachment()
            # while it awaits attachments: this one is unexpected.
            raise MalformedPacketError("unexpected binary message")
        try:
            attachments: int = super().decode(encoded_packet)
        except PayloadError as exc:
            if self.packet_type != sio_packet.EVENT:
                raise MalformedPacketError(str(exc)) from None
            # The header (namespace, id) is known: answer this event.
            self.data = [self._event("", len(encoded_packet), error=str(exc))]
            return 0
        except ValueError as exc:
            raise MalformedPacketError(str(exc) or "invalid packet") from None
        if self.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            self.data = self._event_data(self.data, len(encoded_packet))
        return attachments

    def add_attachment(self, attachment: bytes) -> bool:
        """Add a binary attachment, counting it in the event's size."""
        event = self.data[0] if isinstance(self.data, list) and self.data else None
        if isinstance(event, IncomingEvent):
            event.size += len(attachment)
        try:
            complete: bool = super().add_attachment(attachment)
        except ValueError as exc:
            raise MalformedPacketError(str(exc)) from None
        return complete

    def _event_data(self, data: Any, size: int) -> list[Any]:
        if not isinstance(data, list) or not data:
            return [self._event("", size, error="an event must be [name, *args]")]
        name = data[0]
        if not isinstance(name, str):
            return [self._event("", size, error="an event name must be a string")]
        data[0] = self._event(name, size)
        return data

    def _event(self, name: str, size: int, error: str | None = None) -> IncomingEvent:
        return IncomingEvent(name, size=size, ack=self.id is not None, error=error)
