"""The WebSocket transport of Engine.IO sessions: RFC 6455 on the accepted
socket, written without waiting.

python-engineio's ``gevent`` mode runs a WebSocket on simple-websocket,
which duplicates the accepted socket and reads it in a greenlet of its
own; python-engineio adds a writer greenlet per session (queue, then
``pkt.encode()`` and one frame per recipient) and a greenlet sleeping
until each ping: four greenlets and two descriptors per idle connection,
and per-recipient encoding of what a broadcast sends to all.
:class:`WebSocketTransport` replaces all of that for the sessions of an
:class:`~oe_web_socketio.sockets.EngineIOServer` (see
:func:`use_websocket_transport`):

* **One descriptor, no greenlet while idle.** The handshake is answered
  on the socket gevent accepted; the request's own greenlet reads what
  the client sent at once: wsproto's sans-IO
  :class:`~wsproto.frame_protocol.FrameProtocol` parses what it reads
  (framing, fragmentation, masking, control frames, UTF-8, the
  ``permessage-deflate`` extension), and a message is handed to the
  session as python-engineio's loop did, once checked
  (:func:`~oe_web_socketio.protocol.decode_engineio_packet`). Once the
  socket has nothing more, the transport adopts the connection from the
  server (:data:`ADOPT`), the request returns, and a watcher of the event
  loop waits for the client's next bytes: a greenlet is spawned to read
  them, and ends when the socket is idle again. A waiting greenlet
  would keep its stacks and frames, about half of what an idle
  connection held (README "Benchmarks"). A message begun and not
  finished (a half frame) is waited for in that greenlet.
* **No writer greenlet.** The session's queue
  (:class:`~oe_web_socketio.limits.PacketQueue`) hands each packet to
  :meth:`WebSocketTransport.put` in the sending greenlet, which appends
  its frame to the connection's output buffer. The first frame of a turn
  of the event loop is written at once, with a non-blocking ``send()``
  (a lone message waits for nothing); the frames that follow it in the
  same turn (a burst of broadcasts) are written together at the turn's
  end, with one ``send()`` per connection. What the kernel does not take
  stays in the buffer, flushed by a write watcher when the socket becomes
  writable. That buffer is what ``max_queued_bytes`` bounds; a client
  that does not read is cut (see :mod:`oe_web_socketio.limits`).
* **One encode per broadcast.** python-socketio sends the same Engine.IO
  packet object to every recipient of an emit: its frame is built once
  (:func:`message_frame`) and kept on the packet. A connection that
  agreed on ``permessage-deflate`` (``websocket_compression``) gets
  messages of :data:`COMPRESSION_THRESHOLD` bytes or more compressed
  with its own zlib state, so those are framed per connection.
* **Pings on timers.** The ping a session is due is a timer of the event
  loop (:func:`ping_later`), not a sleeping greenlet.

Invariants:

* Packets reach a client in the order they were put into its session's
  queue: before the WebSocket is attached, they wait in the queue, which
  :meth:`~WebSocketTransport.attach` empties into the output buffer before
  any later packet is appended; after, everything goes through that
  buffer, which is written in order, from one place (:meth:`_flush`).
* Once the ``101`` is written, nothing but WebSocket frames goes on the
  connection (the request is marked :data:`TAKEN_OVER`; the server's
  handler writes no HTTP answer after it).
* Who closes what: the session ending (``None`` put in its queue) appends
  a close frame of the code and reason :func:`close_session` gave, or
  :attr:`~WebSocketTransport.close_code`, and shuts the connection down
  once it is written (or after ``ping_timeout`` if the client does not
  read it); :func:`abort_transport` shuts it down at once. Either ends the
  request greenlet's read (which has no timeout once the WebSocket is
  attached; before, during an upgrade, ``ping_interval + ping_timeout``),
  or wakes the watcher of an idle one, whose greenlet reads the end: the
  session ends if it is not over, and the server closes the socket (when
  the request returns, or, for an adopted connection, when the transport
  calls what :meth:`~.server.Server.adopt` returned). A close frame from
  the client is answered with its code, and the connection shut down. A
  frame that breaks RFC 6455 closes with the code wsproto names (1002,
  1007, ...), a message over ``max_http_buffer_size`` with 1009, a packet
  no client sends with the code of
  :class:`~oe_web_socketio.exceptions.EngineIOPacketError`: one log line
  each, and the request is marked :data:`REFUSED`.
* The watchers of a transport are stopped before it ends (its request
  returns, or it hands an adopted connection back), and a transport that
  ended writes nothing more: the descriptor is never touched after the
  server closed it. While the socket's read watcher waits for an idle
  client, nothing else waits on it (no greenlet reads), and the socket is
  shut down with the system's call, not gevent's, which would hand the
  watcher's callback an exception meant for a greenlet.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import socket
import struct
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, cast

import engineio
import gevent
import gevent.queue
import greenlet
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from oe_web_socketio import logs
from oe_web_socketio.exceptions import EngineIOPacketError, QueueFull
from oe_web_socketio.protocol import (
    CLIENT_PACKET_TYPES,
    CLOSE_INTERNAL_ERROR,
    decode_engineio_packet,
)

logger = logging.getLogger(__name__)

#: WebSocket close codes (RFC 6455, 7.4.1): normal closure, an endpoint
#: going away, such as a server shutting down, and a message too big.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

#: The ``environ`` key :class:`WebSocketTransport` sets once it has taken
#: the request's connection over (answered ``101`` itself).
TAKEN_OVER = "oe_web_socketio.websocket"

#: The ``environ`` key of the server's offer to let the transport keep the
#: connection after the request returns: a callable taking the transport,
#: returning what the transport calls once done with the socket (see
#: :meth:`.server.Handler.adopt`). Without it, the request's greenlet
#: reads the WebSocket until its end.
ADOPT = "oe_web_socketio.adopt"

#: The ``environ`` key :class:`WebSocketTransport` sets when it ends the
#: session for what its client sent: the access log line of the request
#: then counts as a client's fault (see :mod:`oe_web_socketio.logs`).
REFUSED = "oe_web_socketio.refused"

#: The attribute of a python-engineio session that holds the close code and
#: reason its WebSocket ends with (see :func:`close_session`).
CLOSE_FRAME = "oe_web_socketio_close_frame"

#: Most bytes of a close frame's reason (RFC 6455: 125 with the code).
CLOSE_REASON_SIZE = 123

#: The attribute of a python-engineio session that holds (a weak reference
#: to) its WebSocket transport, for :func:`abort_transport`.
TRANSPORT = "oe_web_socketio_transport"

#: The attribute of a python-engineio session that holds the loop timer
#: of its next ping (see :func:`ping_later`).
PING_TIMER = "oe_web_socketio_ping_timer"

#: The attribute of an Engine.IO packet that keeps its WebSocket frame,
#: built once for every recipient (see :func:`message_frame`).
FRAME = "oe_web_socketio_frame"

#: Messages at least this long are compressed when the client and the
#: ``websocket_compression`` setting agreed on ``permessage-deflate``
#: (as Node's ``ws``): below, deflate saves little and costs much.
COMPRESSION_THRESHOLD = 1024

#: The GUID of the handshake's ``Sec-WebSocket-Accept`` (RFC 6455, 1.3).
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Bytes asked of one ``recv()``.
RECEIVE_SIZE = 65536

#: Bytes asked of one ``recv()`` once ``permessage-deflate`` is agreed:
#: wsproto inflates what it is given without a bound, up to about 1,000
#: times its size, before the message's size is checked.
RECEIVE_SIZE_DEFLATE = 4096

_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame(opcode: int, payload: bytes) -> bytes:
    """A whole server frame (final, unmasked, no extension bit) of
    *opcode* carrying *payload*."""
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65536:
        return _MEDIUM.pack(0x80 | opcode, 126, length) + payload
    return _LONG.pack(0x80 | opcode, 127, length) + payload


def lone_frame(data: bytes, limit: int) -> str | bytes | None:
    """The message of *data* if *data* is exactly one whole client frame
    that needs nothing of wsproto: final, masked, no RSV bit, text or
    binary, a 7- or 16-bit length (minimal, RFC 6455 5.2) of at most
    *limit* bytes; else ``None``, and wsproto parses *data* (anything
    else: fragments, control frames, several frames, part of one, errors).

    The common case of a client's message, read in one ``recv()``: about
    a fifth of wsproto's cost (a lone message's latency, bench/README.md).

    :raises UnicodeDecodeError: a text frame that is not UTF-8 (strictly,
        as wsproto's decoder; 1007).
    """
    size = len(data)
    if size < 6:
        return None
    first = data[0]
    length = data[1] ^ 0x80  # the mask bit must be set
    if (first != 0x81 and first != 0x82) or length > 126:
        return None
    start = 6
    if length == 126:
        length = (data[2] << 8) | data[3]
        start = 8
        if length < 126:
            return None  # not minimal: wsproto refuses it
    if size != start + length or length > limit:
        return None
    key = data[start - 4 : start]
    payload = (
        int.from_bytes(data[start:], "big")
        ^ int.from_bytes((key * (length // 4 + 1))[:length], "big")
    ).to_bytes(length, "big")
    if first == 0x81:
        return payload.decode()
    return payload


def close_reason(text: str) -> str:
    """*text* cut to fit a WebSocket close frame (UTF-8, whole characters)."""
    encoded = text.encode()
    if len(encoded) <= CLOSE_REASON_SIZE:
        return text
    return encoded[: CLOSE_REASON_SIZE - 3].decode(errors="ignore") + "..."


def close_frame(code: int | None, reason: str | None = None) -> bytes:
    """A close frame of *code* (none: an empty one) and *reason*."""
    if code is None or code == CLOSE_NO_STATUS:
        return frame(Opcode.CLOSE, b"")
    payload = struct.pack("!H", code)
    if reason:
        payload += close_reason(reason).encode()
    return frame(Opcode.CLOSE, payload)


def message_frame(pkt: eio_packet.Packet) -> bytes:
    """The WebSocket frame of Engine.IO packet *pkt*, built once: kept on
    the packet, which python-socketio sends as is to every recipient of an
    emit (a text frame, or binary for a binary packet)."""
    cached: bytes | None = pkt.__dict__.get(FRAME)
    if cached is None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            cached = frame(Opcode.TEXT, encoded.encode())
        else:
            cached = frame(Opcode.BINARY, encoded)
        setattr(pkt, FRAME, cached)
    return cached


def websocket_of(session: Any) -> WebSocketTransport | None:
    """The WebSocket transport of python-engineio's *session*, if any."""
    reference = getattr(session, TRANSPORT, None)
    transport: WebSocketTransport | None = reference() if reference else None
    return transport


def abort_transport(session: Any) -> None:
    """Cut the WebSocket connection of python-engineio's *session* at once,
    if it has one: no close frame, which would wait behind what a client
    that stopped reading has not read; what is buffered for it is dropped."""
    transport = websocket_of(session)
    if transport is not None:
        transport.abort()


def close_session(session: Any, code: int, reason: str) -> None:
    """End the python-engineio *session* at once because of its client.

    The client is sent the Engine.IO close packet and, on a WebSocket, a
    close frame of *code* and *reason*; the Socket.IO disconnection runs
    now, so that ``/health`` no longer counts the client. Nothing waits for
    the client. Closing a closed session does nothing.
    """
    if not session.closed and not session.closing:
        setattr(session, CLOSE_FRAME, (code, close_reason(reason)))
    session.close(wait=False, reason=session.server.reason.SERVER_DISCONNECT)


def ping_later(session: Any, interval: float) -> None:
    """Send python-engineio's *session* its next ping in *interval* seconds,
    from a timer of the event loop (python-engineio sleeps a greenlet per
    session for it: see :meth:`.Limits.start_background_task`).

    The callback runs in the event loop: it only queues the ping, which
    never blocks, and it cannot end the session (``last_ping`` is set
    just before, so python-engineio's ping timeout check passes).
    """
    timer = gevent.get_hub().loop.timer(interval)
    # Stopped at the end of a WebSocket, which would else keep the
    # session (and what it references) until the timer fires.
    setattr(session, PING_TIMER, timer)

    def ping() -> None:
        if not session.closing and not session.closed:
            session.last_ping = time.time()
            session.send(eio_packet.Packet(eio_packet.PING))

    timer.start(ping)


class _Flusher:
    """The turns of one event loop's writes, and the transports with
    frames to write at the end of this one: written together, from one
    callback.

    A transport that writes the first frame of a turn at once stamps it
    with :attr:`turn` (:meth:`written`); a second frame in the same turn
    joins :attr:`pending`. Only those are flushed at the turn's end, not
    every transport that wrote (a lone message to many clients).
    """

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        #: The turn of the loop, counted by the callbacks of :meth:`flush`.
        self.turn = 0
        #: Whether :meth:`flush` is due at the end of this turn.
        self.armed = False
        self.pending: list[WebSocketTransport] = []

    @classmethod
    def of(cls, hub: Any) -> _Flusher:
        flusher: _Flusher | None = getattr(hub, "oe_web_socketio_flusher", None)
        if flusher is None:
            flusher = cls(hub.loop)
            hub.oe_web_socketio_flusher = flusher
        return flusher

    def written(self) -> int:
        """This turn, for a transport that writes now; the turn ends with
        :meth:`flush`."""
        if not self.armed:
            self.armed = True
            self.loop.run_callback(self.flush)
        return self.turn

    def flush(self) -> None:
        self.armed = False
        self.turn += 1
        pending, self.pending = self.pending, []
        for transport in pending:
            transport.scheduled = False
            try:
                transport._flush()
            except Exception:  # a bug: the other transports still get theirs
                logger.exception("WebSocket write failed")
                transport.abort()


def _is_message(message: str | bytes) -> bool:
    """Whether python-engineio 4.15.1 decodes *message* from a client's
    WebSocket into a ``MESSAGE`` packet whose data is the message as is
    (binary) or less its type (text: ``4`` then a digit, which it takes
    for no JSON; every Socket.IO packet starts with its type's digit)."""
    if isinstance(message, bytes):
        return True
    return len(message) > 1 and message[0] == "4" and message[1].isnumeric()


def _wsproto_idle(proto: FrameProtocol) -> bool:
    """Whether wsproto holds nothing of what the client sent: no bytes, no
    frame begun, no fragmented message begun. (Its private state, of
    wsproto 1.3 as pinned in versions.cfg; test_websocket.py's tests of
    :func:`lone_frame` fail if it moves.)"""
    decoder = proto._frame_decoder
    return (
        not decoder.buffer.buffer
        and decoder.header is None
        and proto._message_decoder.opcode is None
    )


def _handshake_error(environ: dict[str, Any]) -> str | None:
    """What makes the request's WebSocket handshake invalid (RFC 6455,
    4.2.1), or ``None``."""
    connection = environ.get("HTTP_CONNECTION", "").lower()
    if environ.get("REQUEST_METHOD") != "GET":
        return "the method is not GET"
    if "upgrade" not in (token.strip() for token in connection.split(",")):
        return "no Connection: Upgrade"
    if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        return "no Upgrade: websocket"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
        return "Sec-WebSocket-Version is not 13"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "Sec-WebSocket-Key is not 16 bytes in base64"
    except ValueError:
        return "Sec-WebSocket-Key is not base64"
    if "HTTP_HOST" not in environ:
        return "no Host"
    return None


def _negotiate_deflate(offers: str) -> tuple[PerMessageDeflate, str] | None:
    """The ``permessage-deflate`` extension accepted from the client's
    *offers*, and the header value that says so, or ``None``."""
    for item in offers.split(","):
        offer = item.strip()
        if offer.split(";", 1)[0].strip() != PerMessageDeflate.name:
            continue
        extension = PerMessageDeflate()
        accepted = extension.accept(offer)
        if accepted is None or accepted is False:
            continue
        if accepted is True or accepted == "":
            return extension, extension.name
        return extension, f"{extension.name}; {accepted}"
    return None


class WebSocketTransport:
    """The WebSocket of one python-engineio session (see the module).

    python-engineio 4.15.1 builds it with the session's
    ``_websocket_handler`` and the server, and calls it as a WSGI
    application; that handler is not run: this class does its work (the
    upgrade's probe, the read loop) on its own terms.

    :param handler: the session's ``_websocket_handler`` (bound method).
    :param server: the Engine.IO server.
    """

    #: Whether the WebSocket accepts ``permessage-deflate`` when the
    #: client offers it (see :attr:`.Config.websocket_compression`; set by
    #: :func:`use_websocket_transport`).
    compression: bool = False

    #: The status code of the close frame: 1000 (normal closure), or 1001
    #: (going away) once :func:`going_away` was called for the server.
    close_code: int = CLOSE_NORMAL

    def __init__(self, handler: Callable[[Any], Any], server: engineio.Server) -> None:
        self.server = server
        self.max_message_size: int = server.max_http_buffer_size
        #: The python-engineio session this WebSocket serves (the handler
        #: is its bound method).
        self.session: Any = getattr(handler, "__self__", None)
        if self.session is not None:
            setattr(self.session, TRANSPORT, weakref.ref(self))
        self.request_environ: dict[str, Any] = {}
        self.sock: Any = None
        self._raw: Any = None
        self.proto: FrameProtocol | None = None
        self.deflate: PerMessageDeflate | None = None
        #: Frames not written yet, in order, and their bytes.
        self.chunks: list[bytes] = []
        self.buffered = 0
        #: Whether the kernel refused bytes: the write watcher is on.
        self.blocked = False
        #: Whether the transport is in its loop's list of buffers to write.
        self.scheduled = False
        #: The loop's turn in which it last wrote at once (see _Flusher).
        self.turn = -1
        #: Whether the close frame is appended (nothing more is).
        self.closing = False
        #: Whether the request ended: nothing is written any more.
        self.finished = False
        #: Whether the session's packets come here (see :meth:`attach`).
        self.attached = False
        self._writer: Any = None
        self._deadline: Any = None
        self._flusher = _Flusher.of(gevent.get_hub())
        #: The client's address, for the log lines of greenlets spawned
        #: to read (:data:`.logs.CLIENT`).
        self.client: str | None = None
        #: The server's offer (:data:`ADOPT`), until taken; then what to
        #: call once done with the socket.
        self._adopt: Callable[[WebSocketTransport], Callable[[], None]] | None = None
        self._release: Callable[[], None] | None = None

    # --- the request

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        self.request_environ = environ
        self.client = logs.CLIENT.get()
        error = _handshake_error(environ)
        sock = _accepted_socket(environ)
        if error is not None or sock is None or self.session is None:
            logger.warning(
                "Refused WebSocket handshake from %s: %s",
                logs.CLIENT.get(),
                error or "no socket",
            )
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"Invalid WebSocket handshake"]
        self.sock, self._raw = sock, sock._sock
        extensions: list[Any] = []
        headers = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + _accept_key(environ["HTTP_SEC_WEBSOCKET_KEY"]),
        ]
        offers = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
        if self.compression and offers:
            negotiated = _negotiate_deflate(offers)
            if negotiated is not None:
                self.deflate, header = negotiated
                extensions.append(self.deflate)
                headers.append(b"Sec-WebSocket-Extensions: " + header.encode())
        self.proto = FrameProtocol(client=False, extensions=extensions)
        environ[TAKEN_OVER] = True
        self._adopt = environ.get(ADOPT)
        idle = False
        try:
            # The socket is fresh: the kernel takes these few bytes.
            sock.sendall(b"\r\n".join(headers) + b"\r\n\r\n")
            self.proto.receive_bytes(release_request_buffer(environ, sock))
            sock.settimeout(self.server.ping_interval + self.server.ping_timeout)
            if self._serve():
                self._park()
                idle = True
        except OSError as exc:
            logger.debug("WebSocket connection lost: %s", exc)
        except Exception as exc:  # a bug, yet no HTTP after the 101
            logger.error("WebSocket handler failed", exc_info=exc)
            close_session(self.session, CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._adopt = None  # the Handler's, not kept
            if not idle:
                self._end()
        return []

    def _serve(self) -> bool:
        """The upgrade's probe if any, then read while the client sends;
        whether the socket is idle (see :meth:`_read`)."""
        session = self.session
        if session.connected:
            session.upgrading = True
            try:
                if not self._upgrade():
                    return False
            finally:
                session.upgrading = False
            session.upgraded = True
        else:
            session.connected = True
            session.upgraded = True
        self.attach()
        return self._read()

    def _read(self) -> bool:
        """Read and hand on the client's messages; ``False`` once the
        connection or the session has ended, ``True`` when the socket has
        nothing more and the connection can be adopted (:meth:`_park`)."""
        session = self.session
        on_message = self.server.handlers.get("message")
        sid = session.sid
        parkable = self._adopt is not None or self._release is not None
        while True:
            if session.closed or session.closing:
                return False
            if parkable and self._idle():
                return True
            message = self._read_message()
            if message is None or session.closed or session.closing:
                return False
            if on_message is not None and _is_message(message):
                # What python-engineio's Socket.receive does with a MESSAGE
                # packet, without building the packet, decoding it again
                # and logging it (python-socketio's own handler is called;
                # sockets.Server checks what it carries).
                try:
                    on_message(sid, message if type(message) is bytes else message[1:])
                except Exception:
                    self.server.logger.exception("message handler error")
                continue
            try:
                pkt = decode_engineio_packet(message, CLIENT_PACKET_TYPES)
            except EngineIOPacketError as exc:
                self._refuse(exc)
                return False
            try:
                session.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                return False

    def _idle(self) -> bool:
        """Whether nothing the client sent waits: neither in wsproto (a
        message begun waits in the reading greenlet) nor in the kernel
        (the end of the stream, an error, are for the read to see)."""
        assert self.proto is not None
        if not _wsproto_idle(self.proto):
            return False
        try:
            self._raw.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False

    def _park(self) -> None:
        """Let the request (or the reading greenlet) return: the server's
        connection is adopted, if not yet, and the socket's read watcher
        wakes :meth:`_wake` when the client sends or closes."""
        if self._release is None:
            adopt, self._adopt = self._adopt, None
            assert adopt is not None
            self._release = adopt(self)
        self.sock._read_event.start(self._wake)

    def _wake(self) -> None:
        """In the event loop: the socket is readable; read it in a
        greenlet (nothing may block here), run at once: a child of the
        hub, which it switches back to when it waits or ends, as gevent's
        own greenlets do. Neither a :class:`gevent.Greenlet` nor a turn
        of the loop before it runs, as with ``gevent.spawn`` (a few µs of
        the 230-330 µs a message of an idle client costs the server here,
        below the noise of bench/idle_wake.py on a shared machine)."""
        self.sock._read_event.stop()
        greenlet.greenlet(self._resume, gevent.get_hub()).switch()

    def _resume(self) -> None:
        """Read what woke the watcher, and on until the socket is idle
        again (parked anew) or the connection ends (then handed back to
        the server, which closes it)."""
        logs.CLIENT.set(self.client)
        idle = False
        try:
            if self._read():
                self._park()
                idle = True
        except OSError as exc:
            logger.debug("WebSocket connection lost: %s", exc)
        except Exception as exc:  # a bug
            logger.error("WebSocket handler failed", exc_info=exc)
            close_session(self.session, CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            if not idle:
                try:
                    self._end()
                    self._forget_session()
                finally:
                    release, self._release = self._release, None
                    if release is not None:
                        release()

    def _forget_session(self) -> None:
        """Take the closed session out of the server's sessions, as
        python-engineio does when the request of a WebSocket returns (this
        one returned long ago): ``max_connections`` counts them."""
        session = self.session
        sessions = self.server.sockets
        if session.closed and sessions.get(session.sid) is session:
            del sessions[session.sid]

    def forget(self) -> None:
        """The server closes the adopted socket itself (its stop's last
        resort): watch it no more, write nothing more."""
        if self.sock is not None:
            self.sock._read_event.stop()
        self.finished = True
        for watcher in (self._writer, self._deadline):
            if watcher is not None:
                watcher.close()
        self._writer = self._deadline = None

    def _upgrade(self) -> bool:
        """The probe of an upgrade from polling: ``2probe`` answered
        ``3probe``, the held poll ended (``NOOP``), then ``5``."""
        probe = self._receive(frozenset({eio_packet.PING}))
        if probe is None:
            return False
        if probe.data != "probe":
            self._refuse(EngineIOPacketError("an upgrade starts with 2probe"))
            return False
        self._write_now(frame(Opcode.TEXT, b"3probe"))
        self.session.queue.put(eio_packet.Packet(eio_packet.NOOP))
        return self._receive(frozenset({eio_packet.UPGRADE})) is not None

    def _receive(self, allowed: frozenset[int]) -> eio_packet.Packet | None:
        """The next Engine.IO packet from the client, of a type in
        *allowed*; ``None`` once the connection or the session has ended,
        or after refusing what the client sent (see the module)."""
        session = self.session
        if session.closed or session.closing:
            return None
        message = self._read_message()
        if message is None or session.closed or session.closing:
            return None
        try:
            return decode_engineio_packet(message, allowed)
        except EngineIOPacketError as exc:
            self._refuse(exc)
            return None

    def _read_message(self) -> str | bytes | None:
        """The next whole message (text or binary); ``None`` once the
        connection has ended, the client closed it, or after refusing a
        frame. Control frames are answered on the way.

        When wsproto holds nothing (no bytes, no frame nor message begun)
        and no extension is agreed, a read that is one whole message
        (:func:`lone_frame`) skips wsproto; anything else is given to it.
        """
        proto = self.proto
        assert proto is not None
        if self.deflate is None and _wsproto_idle(proto):
            data = self.sock.recv(RECEIVE_SIZE)
            if not data:
                return None
            try:
                message = lone_frame(data, self.max_message_size)
            except UnicodeDecodeError as exc:
                self._refuse(EngineIOPacketError(str(exc), CLOSE_INVALID_DATA))
                return None
            if message is not None:
                return message
            proto.receive_bytes(data)
        parts: list[Any] = []
        size = 0
        while True:
            try:
                for received in proto.received_frames():
                    opcode = received.opcode
                    # wsproto's payload: bytes, or (code, reason) for a close.
                    if opcode is Opcode.PING:
                        self._append(frame(Opcode.PONG, cast(bytes, received.payload)))
                    elif opcode is Opcode.CLOSE:
                        code, _reason = cast(tuple[int, str], received.payload)
                        self._close_now(close_frame(code))
                        return None
                    elif opcode is not Opcode.PONG:
                        parts.append(received.payload)
                        size += len(received.payload)
                        if size > self.max_message_size:
                            self._refuse(
                                EngineIOPacketError(
                                    f"message over {self.max_message_size} bytes",
                                    CLOSE_TOO_BIG,
                                )
                            )
                            return None
                        if received.message_finished:
                            if len(parts) == 1:
                                return parts[0]  # type: ignore[no-any-return]
                            return type(parts[0])().join(parts)  # type: ignore[no-any-return]
            except ParseFailed as exc:
                self._refuse(EngineIOPacketError(str(exc), int(exc.code)))
                return None
            data = self.sock.recv(
                RECEIVE_SIZE if self.deflate is None else RECEIVE_SIZE_DEFLATE
            )
            if not data:
                return None
            proto.receive_bytes(data)

    def _refuse(self, exc: EngineIOPacketError) -> None:
        """End the session for what its client sent: one log line, the
        close frame of *exc*'s code."""
        self.request_environ[REFUSED] = True
        logger.warning(
            "Closing session %s from %s: %s",
            getattr(self.session, "sid", "?"),
            logs.CLIENT.get(),
            exc,
        )
        close_session(self.session, exc.close_code, str(exc))
        # Before it is attached, the session's end does not reach here.
        self.close()

    def _end(self) -> None:
        """The request ends: end the session (a client gone), stop the
        watchers; the server's handler closes the socket after."""
        session = self.session
        # A connection lost during an upgrade leaves the session polling.
        if self.attached and not session.closed:
            session.close(
                wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE
            )
        if not self.closing:
            self.close()
        if getattr(session, CLOSE_FRAME, None) is not None:
            self.request_environ[REFUSED] = True  # closed by close_session()
        self.finished = True
        self.chunks = []
        self.buffered = 0
        # A session that goes on polling (an upgrade lost) keeps its pings.
        ping = getattr(session, PING_TIMER, None) if session.closed else None
        for watcher in (self._writer, self._deadline, ping):
            if watcher is not None:
                watcher.close()
        self._writer = self._deadline = None

    # --- what the session sends

    def attach(self) -> None:
        """Take over the session's queue: what waits in it goes into the
        output buffer, in order, and from now on every packet put there
        comes to :meth:`put`."""
        queue = self.session.queue
        while True:
            try:
                item = queue.get_nowait()
            except gevent.queue.Empty:
                break
            queue.task_done()
            self.put(item, force=True)
        queue.sink = self
        # Its storage is unused from now on (PacketQueue.release).
        release = getattr(queue, "release", None)
        if release is not None:
            release()
        self.attached = True
        # From now on the session's end ends the read (close(), abort()):
        # no timer per read (about 0.8 KiB per idle connection).
        self.sock.settimeout(None)

    def put(self, item: Any, *, force: bool = False) -> None:
        """Send *item*, a packet of the session, or ``None`` for its end.

        :param force: append it even past the session's cap.
        :raises ~oe_web_socketio.limits.QueueFull: a message that would take
            the output buffer past ``max_queued_bytes``, unless *force*.
        """
        if item is None:
            self.close()
            return
        if self.closing or self.finished:
            return
        if self.deflate is not None and item.packet_type == eio_packet.MESSAGE:
            data = item.encode()
            if len(data) >= COMPRESSION_THRESHOLD:
                assert self.proto is not None
                # Refused before compressing: the compressor's state must
                # only ever see what the client gets.
                self._check_room(len(data), force)
                self._append(bytes(self.proto.send_data(data)))
                return
        frame_ = item.__dict__.get(FRAME) or message_frame(item)
        if self.chunks or self.blocked or self.turn == self._flusher.turn:
            self._append(frame_, force)
        else:
            # _append's first frame of a turn, inline: two calls less per
            # recipient of a broadcast (nothing is buffered, so the cap
            # does not apply).
            self.turn = self._flusher.written()
            self._send(frame_)

    def discard(self) -> int:
        """Drop what is buffered; return the bytes freed."""
        freed = self.buffered
        if not self.blocked:
            self.chunks = []
            self.buffered = 0
        # A frame partly written stays: the connection is cut anyway.
        return freed

    def _check_room(self, size: int, force: bool) -> None:
        """:raises QueueFull: *size* more bytes would take the buffer past
        the session's cap (unless *force*, or the buffer is empty)."""
        if not force and self.buffered:
            limit = getattr(self.session.queue, "limit", None)
            if limit is not None and self.buffered + size > limit:
                raise QueueFull(self.buffered, size, limit)

    def _append(self, data: bytes, force: bool = True) -> None:
        if self.finished:
            return
        self._check_room(len(data), force)
        self.chunks.append(data)
        self.buffered += len(data)
        if self.scheduled or self.blocked:
            return
        # The first frame of this turn of the event loop goes out now (a
        # lone message waits for nothing); those that follow it in the
        # same turn wait for the turn's end, to go out together.
        flusher = self._flusher
        if self.turn == flusher.turn:
            self.scheduled = True
            flusher.pending.append(self)
        else:
            self.turn = flusher.written()
            self._flush()

    def _write_now(self, data: bytes) -> None:
        """Append *data* and write the buffer now."""
        self._append(data)
        self._flush()

    def _flush(self) -> None:
        """Write what is buffered with one non-blocking ``send()``; keep
        what the kernel does not take for the write watcher."""
        chunks = self.chunks
        if self.finished:
            return
        if not chunks:
            if self.closing:
                self._shutdown()
            return
        self._send(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _send(self, data: bytes) -> None:
        """Write *data*, all that is buffered (or nothing is), with one
        non-blocking ``send()``; keep what the kernel does not take."""
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            # The peer is gone: the read sees it too and ends the request.
            logger.debug("WebSocket send failed: %s", exc)
            self.chunks = []
            self.buffered = 0
            self._shutdown()
            return
        if sent == len(data):
            self.chunks = []
            self.buffered = 0
            if self.blocked:
                self.blocked = False
                self._writer.stop()
            if self.closing:
                self._shutdown()
            return
        rest = data[sent:]
        self.chunks = [rest]
        self.buffered = len(rest)
        if not self.blocked:
            self.blocked = True
            if self._writer is None:
                self._writer = gevent.get_hub().loop.io(self._raw.fileno(), 2)
            self._writer.start(self._flush)

    # --- the end

    def close(self) -> None:
        """Append the close frame, with the code and reason
        :func:`close_session` gave the session, or else :attr:`close_code`
        and no reason; shut the connection down once it is written, or
        after ``ping_timeout`` if the client does not read it."""
        if self.closing or self.finished or self.sock is None:
            return
        code, reason = getattr(self.session, CLOSE_FRAME, (self.close_code, None))
        self._close_now(close_frame(code, reason))

    def _close_now(self, data: bytes) -> None:
        if self.closing or self.finished:
            return
        self.closing = True
        self._append(data)
        # Shut down once all is written: now, or when the watcher has
        # written the rest.
        self._flush()
        if self.blocked and self._deadline is None:
            self._deadline = gevent.get_hub().loop.timer(self.server.ping_timeout)
            self._deadline.start(self.abort)

    def abort(self) -> None:
        """Shut the connection down now, dropping what is buffered."""
        self.closing = True
        self.chunks = []
        self.buffered = 0
        self._shutdown()

    def _shutdown(self) -> None:
        if self.finished or self.sock is None:
            return
        if self._writer is not None:
            self._writer.stop()
        # The read ends (the greenlet reading sees the end of the stream,
        # or the watcher of an idle socket wakes), then the request.
        # gevent's shutdown() would hand an exception to the callback of
        # the socket's read watcher, which is not a greenlet's while the
        # socket is idle. OSError: already closed.
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)


def _accepted_socket(environ: dict[str, Any]) -> Any:
    """The gevent socket of the request's connection (gevent's
    ``wsgi.input`` reads it through a buffered reader)."""
    wsgi_input = environ.get("wsgi.input")
    rfile = getattr(wsgi_input, "rfile", wsgi_input)
    raw = getattr(rfile, "raw", None)
    return getattr(raw, "_sock", None)


def release_request_buffer(environ: dict[str, Any], sock: Any) -> bytes:
    """Close the buffered reader gevent read the request with, whose 8 KiB
    buffer would otherwise stay allocated as long as the WebSocket lives
    (closing it leaves the socket open); return the bytes it held past the
    request, frames a client sent before the ``101``, read without
    waiting."""
    wsgi_input: Any = environ.get("wsgi.input")
    rfile = getattr(wsgi_input, "rfile", wsgi_input)
    if not hasattr(rfile, "peek"):
        return b""
    sock.settimeout(0)
    try:
        held: bytes = rfile.peek()
    except OSError:
        held = b""
    rfile.close()
    return held


def _accept_key(key: str) -> bytes:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())


def use_websocket_transport(eio: engineio.Server, *, compression: bool = False) -> None:
    """Make *eio* (``gevent`` async mode) serve WebSocket with
    :class:`WebSocketTransport`.

    python-engineio 4.15.1 takes the class from the private ``_async``
    table of its async driver, a module-level dict shared by every server:
    *eio* is given a copy of its own, with a subclass of its own, whose
    :attr:`~WebSocketTransport.close_code` :func:`going_away` sets.

    :param compression: accept ``permessage-deflate`` when a client offers
        it (:attr:`.Config.websocket_compression`).
    """
    transport = type(
        WebSocketTransport.__name__, (WebSocketTransport,), {"compression": compression}
    )
    eio._async = {**eio._async, "websocket": transport}


def going_away(eio: engineio.Server) -> None:
    """From now on, close the WebSockets of *eio* with 1001 (going away):
    the server is shutting down, the client may come back (see
    :meth:`~oe_web_socketio.app.Application.shutdown`)."""
    eio._async["websocket"].close_code = CLOSE_GOING_AWAY
