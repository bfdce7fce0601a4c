"""The gevent WSGI server.

:class:`Server` is gevent's :class:`~gevent.pywsgi.WSGIServer` with three
changes, each for a reason of this project:

* Every accepted TCP connection gets ``TCP_NODELAY`` and TCP keepalive
  before its first request is read. gevent leaves Nagle's algorithm on, so
  a lone small Socket.IO message would wait about 40 ms for the peer's
  delayed ACK; and without keepalive the kernel never notices that an idle
  peer's host vanished (see :attr:`Server.tcp_keepalive_idle`).
* A connection that asked for a WebSocket, or whose WSGI application
  returned without calling ``start_response``, is closed after the
  response instead of kept alive (see :class:`Handler`).
* Handlers run in a :class:`gevent.pool.Pool`, so :meth:`Server.stop` waits
  for open connections (up to :attr:`Server.stop_timeout`) instead of
  leaving them behind, and binding the listening socket either succeeds or
  raises :class:`~.exceptions.ListenError` with nothing left open.

How WebSocket works here: python-engineio's ``gevent`` async mode, when
gevent-websocket is not installed, hands the request to simple-websocket.
simple-websocket recognises gevent by ``environ["SERVER_SOFTWARE"]``
starting with ``"gevent"`` (so never override it), takes the connection's
socket out of ``environ["wsgi.input"]``, ``dup()``\\ s it, writes the
``101 Switching Protocols`` answer itself and runs the WebSocket on the
duplicate in a greenlet. The WSGI application returns only when the
WebSocket is closed, without having called ``start_response``. Socket
options such as ``TCP_NODELAY`` are shared by the duplicate.

Left alone, that WebSocket outlives its Engine.IO session when the client
stops talking without closing TCP, and a frame python-engineio cannot
decode raises out of its request handler, so that gevent writes a raw
``HTTP 500`` into the upgraded stream and the session lives on until its
ping timeout: see :class:`WebSocketTransport`, which
:func:`use_websocket_transport` puts in its place. Invariants: once a
WebSocket is accepted, nothing but WebSocket frames is written on its
connection; a frame refused ends the Engine.IO session at once, with a
close frame whose code and reason say why, and one log line.

Each connection's handler greenlet knows its client's address
(:data:`oe_web_socketio.logs.CLIENT`), which the log rate limit of
:mod:`oe_web_socketio.logs` keys on; an access log line of a ``4xx`` or
``5xx`` answer counts as a client's fault there.

Nothing here requires the standard library to be monkey-patched: gevent's
own sockets are used explicitly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import engineio
import gevent.pool
import gevent.socket
import simple_websocket
from engineio import packet as eio_packet
from engineio.async_drivers import gevent as engineio_gevent
from gevent.pywsgi import WSGIHandler, WSGIServer
from wsproto import events as wsproto_events
from wsproto.utilities import ProtocolError

from oe_web_socketio import logs
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ListenError
from oe_web_socketio.protocol import (
    CLIENT_PACKET_TYPES,
    CLOSE_INTERNAL_ERROR,
    EngineIOPacketError,
    decode_engineio_packet,
)

logger = logging.getLogger(__name__)

#: Logger of one line per HTTP request (gevent's access log).
access_logger = logging.getLogger("oe_web_socketio.access")

WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm on *sock* if it is a TCP socket.

    :raises OSError: the system refused, e.g. because the peer has already
        reset the connection.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_keepalive(sock: socket.socket, idle: int, interval: int, count: int) -> None:
    """Turn TCP keepalive on for *sock* if it is a TCP socket.

    After *idle* seconds without traffic the kernel sends a probe every
    *interval* seconds, and resets the connection after *count* unanswered
    ones: a receive blocked on it then fails.

    :raises OSError: the system refused.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


def is_websocket_request(environ: dict[str, Any]) -> bool:
    """Whether the request asks to switch to the WebSocket protocol."""
    upgrade: str = environ.get("HTTP_UPGRADE", "")
    return upgrade.lower() == "websocket"


#: WebSocket close codes (RFC 6455, 7.4.1): normal closure, and an endpoint
#: going away, such as a server shutting down.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001

#: The ``environ`` key :class:`WebSocketTransport` sets once it has taken
#: the request's connection over (answered ``101`` itself).
TAKEN_OVER = "oe_web_socketio.websocket"

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


def websocket_of(session: Any) -> WebSocketTransport | None:
    """The WebSocket transport of python-engineio's *session*, if any."""
    reference = getattr(session, TRANSPORT, None)
    transport: WebSocketTransport | None = reference() if reference else None
    return transport


def abort_transport(session: Any) -> None:
    """Cut the WebSocket connection of python-engineio's *session* at once,
    if it has one: no close frame, which would wait behind what a client
    that stopped reading has not read; a send in progress fails, and
    python-engineio's writer and reader end."""
    transport = websocket_of(session)
    if transport is not None and getattr(transport, "ws", None) is not None:
        with contextlib.suppress(OSError):
            transport.ws.sock.shutdown(socket.SHUT_RDWR)


def close_reason(text: str) -> str:
    """*text* cut to fit a WebSocket close frame (UTF-8, whole characters)."""
    encoded = text.encode()
    if len(encoded) <= CLOSE_REASON_SIZE:
        return text
    return encoded[: CLOSE_REASON_SIZE - 3].decode(errors="ignore") + "..."


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


#: Most characters of what a client sent quoted back in a refusal.
REASON_SIZE = 120


def malformed_reason(ex: BaseException) -> str:
    """What is wrong with a request gevent refused to parse, for the
    client and the log: printable ASCII, at most :data:`REASON_SIZE`
    characters (it may quote the client's bytes)."""
    text = (str(ex) or type(ex).__name__).encode("ascii", "backslashreplace")
    reason = "".join(chr(b) if 32 <= b < 127 else "?" for b in text)
    return reason if len(reason) <= REASON_SIZE else reason[:REASON_SIZE] + "..."


def bad_request(reason: str) -> bytes:
    """A whole ``400`` answer whose JSON body gives *reason*; the
    connection is closed after it (what follows cannot be trusted)."""
    body = json.dumps({"error": f"malformed HTTP request: {reason}"}).encode()
    return (
        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def _peer(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


class Handler(WSGIHandler):
    """Per-connection handler: gevent's, plus the end of taken-over sockets.

    After a WebSocket, the bytes that follow on the connection are not an
    HTTP request, so the connection is closed rather than kept alive.
    python-engineio answers ``200`` through ``start_response`` once a
    WebSocket *upgraded from polling* ends (it does not for a WebSocket
    opened directly): the status alone does not tell a WebSocket, and that
    answer is not written, for the connection speaks WebSocket since its
    ``101``: HTTP bytes after the close frame make browsers report
    "Invalid frame header". The access log shows such requests as ``101``.
    """

    def handle(self) -> None:
        # The peer's address, until the application knows better (a
        # trusted proxy's X-Forwarded-For): gevent's own refusals of
        # malformed HTTP are logged with it.
        peer = self.client_address
        logs.CLIENT.set(peer[0] if isinstance(peer, tuple) else None)
        super().handle()

    def run_application(self) -> None:
        super().run_application()
        if self.status is None or is_websocket_request(self.environ):
            self.close_connection = True

    def log_request(self) -> None:
        # No environ for a request gevent could not parse (its 400).
        environ = self.environ or {}
        if (isinstance(self.code, int) and self.code >= 400) or environ.get(REFUSED):
            with logs.client_fault():
                super().log_request()
        else:
            super().log_request()

    def read_request(self, raw_requestline: str) -> bool:
        """gevent's, refusing a request with ``Content-Length`` given twice
        with different values (RFC 9112, 6.3: where the body ends is
        ambiguous, the way requests are smuggled past a proxy); gevent
        reads the first."""
        result: bool = super().read_request(raw_requestline)
        lengths = {
            value.strip() for value in self.headers.get_all("content-length", [])
        }
        if len(lengths) > 1:
            raise ValueError("conflicting Content-Length headers")
        return result

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        """Refuse a request gevent cannot parse (request line, headers,
        ``Content-Length``, chunks): one warning with the client's
        address, and ``400`` with a JSON body saying what was wrong.

        gevent's own logs an ERROR with the socket's repr and, for what
        :mod:`http.client` raises (more than 100 headers, a header line
        over 64 KiB), prints a traceback to stderr.
        """
        reason = malformed_reason(ex)
        logger.warning(
            "Refused malformed HTTP from %s: %s", _peer(self.client_address), reason
        )
        return ("400", bad_request(reason))

    def process_result(self) -> None:
        if self.environ.get(TAKEN_OVER):
            # gevent's access log reads the status from here (gevent 26).
            self._orig_status = "101 Switching Protocols"
            self.close_connection = True
            return
        super().process_result()


class _SimpleWebSocket(simple_websocket.Server):
    """simple-websocket's server, which closes its duplicate of the
    connection's socket when it refuses the handshake (it left it to the
    garbage collector: a ``ResourceWarning`` per refusal)."""

    def handshake(self) -> None:
        try:
            super().handshake()
        finally:
            if not self.connected:
                self.sock.close()


class WebSocketTransport(engineio_gevent.WebSocketWSGI):
    """python-engineio's gevent WebSocket, which lets go of its connection.

    Written against python-engineio 4.15.1 and simple-websocket 1.1.0.
    python-engineio reads a WebSocket with two greenlets: its request
    greenlet waits in :meth:`wait` for simple-websocket's reader greenlet,
    which is blocked in ``recv()`` on the duplicated socket; a writer
    greenlet sends the session's packets and calls :meth:`close` when the
    session ends (ping timeout, server disconnect, shutdown). The base
    class's :meth:`close` only sends a close frame: it wakes neither
    ``recv()`` nor :meth:`wait`. A client that never answers, still
    connected at TCP level, so kept both sockets and both greenlets until
    the kernel gave up on it, about 15 minutes for a vanished host, never
    for a stuck one. Two changes:

    * :meth:`close` shuts the connection down after the close frame: the
      blocked ``recv()`` returns, the reader greenlet ends and closes the
      duplicate, :meth:`wait` returns ``None``, the request ends and
      :class:`Handler` closes the accepted socket.
    * :attr:`socket` is the one python-engineio looks for (``ws._sock`` or
      ``ws.socket``) to set a timeout of ``ping_interval + ping_timeout``,
      which the base class, keeping it in ``ws.sock``, never got. It bounds
      a send to a peer that stopped reading, after which the writer ends
      and calls :meth:`close`.
    """

    def __init__(self, handler: Callable[[Any], Any], server: engineio.Server) -> None:
        super().__init__(handler, server)
        # simple-websocket gathers a message's frames without limit unless
        # told: past it, it closes with 1009 and keeps nothing more.
        self.max_message_size: int = server.max_http_buffer_size
        self.server_args["max_message_size"] = self.max_message_size
        #: The python-engineio session this WebSocket serves (the handler
        #: is its bound method).
        self.session: Any = getattr(handler, "__self__", None)
        if self.session is not None:
            setattr(self.session, TRANSPORT, weakref.ref(self))
        #: Messages read so far: the first two of an upgrade are its own.
        self.received = 0
        self.request_environ: dict[str, Any] = {}

    #: Whether the WebSocket accepts ``permessage-deflate`` when the
    #: client offers it (see :attr:`.Config.websocket_compression`; set by
    #: :func:`use_websocket_transport`). simple-websocket 1.1.0 always
    #: accepts it: without it, the handshake it reads lacks the offer.
    compression: bool = False

    #: File descriptors one WebSocket holds: the accepted connection and
    #: simple-websocket's ``dup()`` of it (the open files limit allows half
    #: as many sessions; see :func:`.limits.session_limit`).
    descriptors: int = 2

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        self.request_environ = environ
        try:
            # As the base class, for gevent (simple-websocket's mode).
            self.ws = _SimpleWebSocket(
                environ if self.compression else without_extensions(environ),
                **self.server_args,
            )
            result: Iterable[bytes] = self.app(self)
            return result
        except OSError as exc:
            # python-engineio turns a send on a WebSocket the peer closed
            # into a bare OSError(), which gevent's handler cannot read
            # (IndexError on its args): a client gone during the upgrade.
            if exc.args or getattr(self, "ws", None) is None or self.ws.connected:
                return self._failed(exc)
            logger.debug("WebSocket closed by the client: %s", self.ws.close_reason)
            return []
        except (ProtocolError, simple_websocket.ConnectionError) as exc:
            if getattr(self, "ws", None) is not None:
                return self._failed(exc)
            # A handshake wsproto refuses (no key, a wrong version …):
            # nothing was written yet, the answer is HTTP.
            logger.warning(
                "Refused WebSocket handshake from %s: %s", logs.CLIENT.get(), exc
            )
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"Invalid WebSocket handshake"]
        except Exception as exc:  # noqa: BLE001 - a bug, yet no HTTP after 101
            return self._failed(exc)
        finally:
            # Set once simple-websocket has written the 101 (it raises
            # before, for a handshake it refuses: that answer is HTTP).
            if getattr(self, "ws", None) is not None:
                environ[TAKEN_OVER] = True
                # python-engineio leaves the WebSocket open after a failed
                # upgrade (the session goes on polling).
                if self.ws.connected:
                    self.close()
                if getattr(self.session, CLOSE_FRAME, None) is not None:
                    environ[REFUSED] = True  # closed by close_session()

    def _failed(self, exc: Exception) -> list[bytes]:
        """End the request after an unexpected exception: a bug, logged
        with its traceback, but answered within the protocol the connection
        speaks (after the ``101``, HTTP bytes would corrupt the stream).

        :raises Exception: *exc*, when no WebSocket was accepted yet.
        """
        if getattr(self, "ws", None) is None:
            raise exc
        logger.error("WebSocket handler failed", exc_info=exc)
        if self.session is not None:
            close_session(self.session, CLOSE_INTERNAL_ERROR, "internal error")
        return []

    def wait(self) -> str | bytes | None:
        """The next message from the client, or ``None`` once the
        WebSocket or its session has ended.

        A message python-engineio would choke on, or that no client sends
        at this point, is refused: the session is closed at once (see
        :func:`close_session`) and ``None`` returned, which python-engineio
        takes for the end of the connection. Messages that follow the end
        of the session are not read.

        Worth reporting to python-engineio: its WebSocket loop decodes a
        frame outside of its ``try`` (a ``ValueError`` or ``RecursionError``
        there ends the request with gevent's ``500`` written into the
        WebSocket, and leaves the session to its ping timeout), dispatches
        frames read after a close packet, and lets a message grow to any
        size before it checks ``max_http_buffer_size``.
        """
        session = self.session
        if session is None or session.closed or session.closing:
            return None
        data: str | bytes | None = super().wait()
        if data is None:
            if self.ws.incoming_message_len > self.max_message_size:
                # simple-websocket sent the close frame (1009).
                self._log_refusal(f"message over {self.max_message_size} bytes")
            return None
        if session.closed or session.closing:
            return None
        self.received += 1
        try:
            if session.upgrading and self.received == 1:
                decode_engineio_packet(data, frozenset({eio_packet.PING}))
                if data != "2probe":
                    raise EngineIOPacketError("an upgrade starts with 2probe")
            elif session.upgrading:
                decode_engineio_packet(data, frozenset({eio_packet.UPGRADE}))
            else:
                decode_engineio_packet(data, CLIENT_PACKET_TYPES)
        except EngineIOPacketError as exc:
            self._log_refusal(str(exc))
            close_session(session, exc.close_code, str(exc))
            return None
        return data

    def _log_refusal(self, reason: str) -> None:
        self.request_environ[REFUSED] = True
        logger.warning(
            "Closing session %s from %s: %s",
            getattr(self.session, "sid", "?"),
            logs.CLIENT.get(),
            reason,
        )

    @property
    def socket(self) -> socket.socket:
        """The socket the WebSocket runs on (a duplicate of the accepted one)."""
        sock: socket.socket = self.ws.sock
        return sock

    def send(self, message: str | bytes) -> None:
        """Send *message* as one WebSocket message, all of it.

        simple-websocket 1.1.0 writes a frame with one ``socket.send()``,
        which on gevent's non-blocking socket writes what fits in the
        kernel's buffer and returns: to a client reading slower than the
        server writes, the rest of the frame was lost and the next frame
        began inside it. Here the frame goes out with ``sendall()``,
        bounded by the socket's timeout (see :attr:`socket`).

        :raises OSError: the WebSocket is closed, or the send failed or
            timed out (python-engineio's writer then ends).
        """
        ws = self.ws
        if not ws.connected:
            # Bare, as python-engineio's own send raises it: the client
            # closed the WebSocket (see __call__).
            raise OSError()
        if isinstance(message, bytes):
            event: wsproto_events.Event = wsproto_events.BytesMessage(data=message)
        else:
            event = wsproto_events.TextMessage(data=message)
        self.sending = True
        try:
            ws.sock.sendall(ws.ws.send(event))
        finally:
            self.sending = False

    #: Whether a :meth:`send` is in progress: seen from another greenlet,
    #: it waits for the client to read (gevent switches only then).
    sending: bool = False

    #: The status code of the close frame: 1000 (normal closure), or 1001
    #: (going away) once :func:`going_away` was called for the server.
    close_code: int = CLOSE_NORMAL

    def close(self) -> None:
        """Send a close frame if still connected, then shut the connection
        down, whatever the peer does.

        The close frame has the code and reason :func:`close_session` gave
        the session, or else :attr:`close_code` and no reason.
        """
        code, reason = getattr(self.session, CLOSE_FRAME, (self.close_code, None))
        try:
            if self.ws.connected:
                self.ws.close(reason=code, message=reason)
        except (
            OSError,
            simple_websocket.ConnectionClosed,
            ProtocolError,
        ) as exc:  # the peer is gone or stopped reading
            logger.debug("Cannot send the WebSocket close frame: %s", exc)
        finally:
            # The duplicate and the accepted socket are one TCP connection:
            # shutting either down ends both. Data already sent still goes
            # out before the FIN. OSError: already closed, by the reader
            # greenlet or the peer.
            with contextlib.suppress(OSError):
                self.ws.sock.shutdown(socket.SHUT_RDWR)


def without_extensions(environ: dict[str, Any]) -> dict[str, Any]:
    """A copy of *environ* without the client's WebSocket extension offers
    (``Sec-WebSocket-Extensions``), so that none is accepted."""
    return {
        key: value
        for key, value in environ.items()
        if key != "HTTP_SEC_WEBSOCKET_EXTENSIONS"
    }


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


class Server(WSGIServer):
    """The gevent WSGI server of :mod:`oe_web_socketio`.

    :param address: ``(host, port)`` to listen on; port ``0`` picks a free
        port, read it from :attr:`address` or :attr:`url` after
        :meth:`start`.
    :param application: the WSGI application.
    """

    handler_class = Handler

    #: Seconds :meth:`stop` waits for open connections to end before it
    #: kills their greenlets.
    stop_timeout: float = 5.0

    #: Most connections handled at once, or ``None`` for no limit. When the
    #: limit is reached the server stops accepting until a connection ends.
    max_connections: int | None = None

    #: Seconds an accepted connection may be idle before TCP keepalive
    #: probes start, then seconds between probes and unanswered probes
    #: before the kernel resets it: a peer whose host vanished is noticed
    #: within about 2 minutes instead of never (while the server has data
    #: in flight, retransmission timeouts apply instead, and Engine.IO's
    #: ping timeout ends the session first).
    tcp_keepalive_idle: int = 60
    tcp_keepalive_interval: int = 10
    tcp_keepalive_count: int = 6

    def __init__(self, address: tuple[str, int], application: WSGIApplication) -> None:
        super().__init__(
            address,
            application,
            spawn=gevent.pool.Pool(self.max_connections),
            log=access_logger,
            error_log=logger,
            # Spares gevent a reverse DNS lookup (getfqdn) at start.
            environ={"SERVER_NAME": address[0]},
        )

    @classmethod
    def get_listener(
        cls,
        address: tuple[str, int],
        backlog: int | None = None,
        family: int | None = None,
    ) -> gevent.socket.socket:
        """Create the listening socket, or raise and leave nothing open.

        Unlike gevent's default, the socket is closed when binding fails,
        and the exception of ``bind()`` is not reworded.
        """
        sock = gevent.socket.socket(family or socket.AF_INET, socket.SOCK_STREAM)
        try:
            if cls.reuse_addr is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, cls.reuse_addr)
            sock.bind(address)
            sock.listen(backlog if backlog is not None else cls.backlog)
            # gevent's accept loop expects a non-blocking listener.
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def start(self) -> None:
        """Bind, listen and start accepting connections.

        :raises ListenError: the address cannot be bound (port in use,
            interface not on this host, unknown host name, permission).
            Nothing is left open then, and :meth:`start` may be retried.
        """
        host, port = self.address[:2]
        try:
            super().start()
        except OSError as exc:
            raise ListenError(host, port, exc.errno, exc.strerror or str(exc)) from exc

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, then drain: wait for open connections to end.

        Connections still open after *timeout* seconds (default
        :attr:`stop_timeout`) are killed, and a warning says how many.
        Calling it again, or after :meth:`close`, is harmless.
        """
        if timeout is None:
            timeout = self.stop_timeout
        self.close()
        if not self.pool.join(timeout=timeout):
            logger.warning(
                "Killing %d connection(s) still open after %g s",
                len(self.pool),
                timeout,
            )
            self.pool.kill(block=True, timeout=1)

    def handle(self, sock: gevent.socket.socket, address: Any) -> None:
        """Handle one accepted connection, with Nagle's algorithm off and
        TCP keepalive on."""
        try:
            set_nodelay(sock)
            set_keepalive(
                sock,
                self.tcp_keepalive_idle,
                self.tcp_keepalive_interval,
                self.tcp_keepalive_count,
            )
        except OSError as exc:
            # The peer is gone already; the handler finds out on its own.
            logger.debug("Cannot set TCP options for %s: %s", address, exc)
        super().handle(sock, address)

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket."""
        host, port = self.address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"


def make_server(config: Config, wsgi_app: WSGIApplication) -> Server:
    """Build (not start) the server listening where *config* says."""
    return Server((config.interface, config.port), wsgi_app)
