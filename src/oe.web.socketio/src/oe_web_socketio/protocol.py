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
* every other decoding failure raises :class:`MalformedPacketError`, and
  so does a binary attachment that is not binary, one too many, or a
  placeholder that names no attachment; at most :data:`MAX_ATTACHMENTS`
  are awaited.

Below Socket.IO, :func:`decode_engineio_packet` and
:func:`decode_engineio_payload` check what a client sends over WebSocket
and polling before python-engineio sees it. python-engineio 4.15 decodes
with no error handling of its own: a frame not starting with a digit, an
empty one, JSON nested too deep, invalid UTF-8 or a bad batch raise from
its request handler (a traceback; over WebSocket a raw ``HTTP 500``
written into the upgraded stream). Invariants:

* they raise only :class:`EngineIOPacketError`, which carries the
  WebSocket close code (RFC 6455) the refusal uses;
* what they accept, python-engineio decodes without raising, to the same
  packets;
* a client may send only the packet types a client sends in Engine.IO 4:
  ``CLOSE``, ``PONG`` and ``MESSAGE`` (and, during an upgrade, the
  ``PING`` probe and ``UPGRADE``).
"""

from __future__ import annotations

import json
from typing import Any, Self

from engineio import json as engineio_json
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from socketio import packet as sio_packet

# EventError is re-exported: integrators import it from here (and from the
# package oe_web_socketio).
from oe_web_socketio.exceptions import (
    EngineIOPacketError,
    EventError,  # noqa: F401
    MalformedPacketError,
    PayloadError,
)

#: The event that carries an error to a client that asked for no
#: acknowledgement.
ERROR_EVENT = "error"

#: The event of messages, in both directions: ``(message)`` or
#: ``(message, channel)``.
MESSAGE_EVENT = "message"

#: The event that tells the sockets of a namespace that keeps presence who
#: arrived and who left (:meth:`~oe_web_socketio.namespace.Namespace.presence`):
#: ``{"event": "join"|"leave", "channel": <channel>|null, "sid", "uid", "login"}``.
PRESENCE_EVENT = "presence"

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

#: WebSocket close codes (RFC 6455, section 7.4.1) of refused sessions.
CLOSE_PROTOCOL_ERROR = 1002  # an Engine.IO packet that breaks the protocol
CLOSE_UNSUPPORTED_DATA = 1003  # a binary message where none is expected
CLOSE_POLICY_VIOLATION = 1008  # a Socket.IO packet that cannot be decoded
CLOSE_INTERNAL_ERROR = 1011

#: Event names a client may never send: python-socketio triggers them.
RESERVED_EVENTS = frozenset({"connect", "disconnect"})


def error_payload(code: str, message: str) -> dict[str, dict[str, str]]:
    """The payload telling a client its event was refused."""
    return {"error": {"code": code, "message": message}}


#: Most binary attachments one event may announce; python-socketio would
#: await up to 10 digits' worth of them, keeping each one received.
MAX_ATTACHMENTS = 16

#: Engine.IO packet types a client sends on a connected session.
CLIENT_PACKET_TYPES = frozenset({eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE})


#: What python-engineio's decoders raise on bad input (``binascii.Error``
#: is a ``ValueError``; ``KeyError`` comes from a JSONP body without ``d``).
_DECODE_ERRORS = (ValueError, TypeError, IndexError, KeyError, RecursionError)


def _shorten(text: str | bytes, size: int = 40) -> str:
    shown = repr(text[:size])
    return shown + "…" if len(text) > size else shown


def decode_engineio_packet(
    encoded: str | bytes, allowed: frozenset[int] = CLIENT_PACKET_TYPES
) -> eio_packet.Packet:
    """Decode one Engine.IO packet from a client, as python-engineio does.

    :param allowed: the packet types the client may send now.
    :raises EngineIOPacketError: the packet cannot be decoded, or is of a
        type not in *allowed*.
    """
    try:
        packet = eio_packet.Packet(encoded_packet=encoded)
    except _DECODE_ERRORS as exc:
        raise EngineIOPacketError(
            f"invalid Engine.IO packet {_shorten(encoded)}: {exc or type(exc).__name__}"
        ) from None
    if packet.packet_type not in allowed:
        raise EngineIOPacketError(f"unexpected Engine.IO packet {_shorten(encoded)}")
    return packet


def decode_engineio_payload(
    body: bytes, allowed: frozenset[int] = CLIENT_PACKET_TYPES
) -> list[eio_packet.Packet]:
    """Decode the body of a polling ``POST``, as python-engineio does.

    :raises EngineIOPacketError: the body is not UTF-8 (close code 1007),
        not a payload python-engineio decodes, or holds a packet of a type
        not in *allowed*.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineIOPacketError(f"invalid UTF-8: {exc.reason}", 1007) from None
    try:
        packets: list[Any] = eio_payload.Payload(encoded_payload=text).packets
    except _DECODE_ERRORS as exc:
        raise EngineIOPacketError(
            f"invalid Engine.IO payload {_shorten(text)}: {exc or type(exc).__name__}"
        ) from None
    for packet in packets:
        if packet.packet_type not in allowed:
            raise EngineIOPacketError(
                f"unexpected Engine.IO packet of type {packet.packet_type}"
            )
    return packets


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


def _json_int(digits: str) -> int:
    """An integer of a client's JSON, refused over 100 digits (as
    python-engineio's ``json.loads`` does)."""
    if len(digits) > 100:
        raise ValueError("Integer is too large")
    return int(digits)


#: What python-engineio's ``json.loads`` builds anew for every call.
_JSON_DECODER = json.JSONDecoder(parse_int=_json_int)


class _PayloadJSON:
    """python-engineio's JSON module, whose ``loads`` tells its failures
    apart from those of the packet header (integers over 100 digits and
    nesting too deep for the decoder are refused here), with one decoder
    for every packet."""

    dumps = staticmethod(engineio_json.dumps)

    @staticmethod
    def loads(text: str) -> Any:
        try:
            if text.startswith("\ufeff"):
                # Refused by json.loads, that python-engineio calls.
                raise ValueError("Unexpected UTF-8 BOM")
            return _JSON_DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None


class Packet(sio_packet.Packet):
    """python-socketio's packet, decoding events as :class:`IncomingEvent`.

    Only decoding changes; encoding is python-socketio's.
    """

    json = _PayloadJSON

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        encoded = kwargs.get("encoded_packet")
        if encoded is not None and not encoded:
            # python-socketio decodes nothing of an empty message and takes
            # it for an event without data (a TypeError when handled).
            raise MalformedPacketError("empty packet")
        super().__init__(*args, **kwargs)

    def decode(self, encoded_packet: str) -> int:
        """Decode *encoded_packet*; return the number of attachments due.

        :raises MalformedPacketError: the packet cannot be decoded and is
            not an ``EVENT`` whose header could be read.
        """
        if not isinstance(encoded_packet, str):
            # python-socketio hands binary messages to add_attachment()
            # while it awaits attachments: this one is unexpected.
            raise MalformedPacketError(
                "unexpected binary message", CLOSE_UNSUPPORTED_DATA
            )
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
        if attachments > MAX_ATTACHMENTS:
            raise MalformedPacketError(f"more than {MAX_ATTACHMENTS} attachments")
        if self.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            self.data = self._event_data(self.data, len(encoded_packet))
        return attachments

    def add_attachment(self, attachment: bytes) -> bool:
        """Add a binary attachment, counting it in the event's size.

        :raises MalformedPacketError: *attachment* is text, or not awaited,
            or the packet's placeholders do not match its attachments.
        """
        if not isinstance(attachment, bytes | bytearray):
            # python-socketio would take a text message as an attachment.
            raise MalformedPacketError(
                "a binary attachment was expected", CLOSE_UNSUPPORTED_DATA
            )
        event = self.data[0] if isinstance(self.data, list) and self.data else None
        if isinstance(event, IncomingEvent):
            event.size += len(attachment)
        try:
            complete: bool = super().add_attachment(attachment)
        except _DECODE_ERRORS as exc:
            # IndexError, TypeError: a placeholder's "num" names no
            # attachment (python-socketio indexes the list with it).
            raise MalformedPacketError(
                f"invalid binary attachment: {exc or type(exc).__name__}"
            ) from None
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
