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

A WebSocket request is served by
:class:`~oe_web_socketio.websocket.WebSocketTransport` on the accepted
socket itself; it marks the request :data:`~.websocket.TAKEN_OVER` once
it has written its ``101``, after which :class:`Handler` writes nothing
more on the connection. An idle WebSocket is read by a watcher of the
event loop rather than by its request's greenlet (memory per idle
connection, README "Benchmarks"): the transport *adopts* the connection
(:data:`~.websocket.ADOPT`, :meth:`Server.adopt`) and the request
returns without closing it; the transport hands it back when it ends,
and only then is it closed and its access log line written.

Invariants: :attr:`Server.open_connections` counts every accepted
connection until it is closed, whether a greenlet of the pool handles it
or a WebSocket transport adopted it; :attr:`Server.max_connections`
bounds that count. :meth:`Server.stop` waits for both kinds, and cuts
the adopted WebSockets still open at its timeout.

Each connection's handler greenlet knows its client's address
(:data:`oe_web_socketio.logs.CLIENT`), which the log rate limit of
:mod:`oe_web_socketio.logs` keys on; an access log line of a ``4xx`` or
``5xx`` answer counts as a client's fault there.

Nothing here requires the standard library to be monkey-patched: gevent's
own sockets are used explicitly.
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent.event
import gevent.pool
import gevent.socket
from gevent.pywsgi import WSGIHandler, WSGIServer, format_date_time

from oe_web_socketio import logs
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ListenError
from oe_web_socketio.websocket import ADOPT, REFUSED, TAKEN_OVER

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


def tcp_options(sock: socket.socket) -> tuple[int, int, int] | None:
    """The TCP keepalive idle time, interval and count of *sock* if both
    ``TCP_NODELAY`` and ``SO_KEEPALIVE`` are on, else ``None`` (and for a
    socket that is not TCP).

    :raises OSError: the system refused.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if not (
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        and sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    ):
        return None
    return (
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def is_websocket_request(environ: dict[str, Any]) -> bool:
    """Whether the request asks to switch to the WebSocket protocol."""
    upgrade: str = environ.get("HTTP_UPGRADE", "")
    return upgrade.lower() == "websocket"


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


#: The ``Date`` header's value of the current second, and that second.
_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The ``Date`` header's value for now (RFC 9110, 5.6.7), formatted
    once a second."""
    global _date  # noqa: PLW0603 - a cache of one value
    now = int(time.time())
    if _date[0] != now:
        _date = (now, format_date_time(now))
    return _date[1]


#: Most bytes of one header line of a request, and most header lines
#: (http.client's limits, which gevent applied).
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100

#: A header field line (RFC 9112, 5.1): a token, ``:`` right after it, a
#: value of visible characters, obs-text (``0x80``-``0xff``), spaces and
#: tabs, then CRLF or a bare LF (which RFC 9112, 2.2 lets a recipient take
#: for CRLF, as gevent does for the request line). No whitespace before
#: the colon, no control character (a bare CR, a NUL) in the value; the
#: value's surrounding whitespace is stripped afterwards, not here, so
#: that a line that fails to match fails in linear time.
_FIELD_LINE = re.compile(
    r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([^\x00-\x08\x0a-\x1f\x7f]*)\r?\n"
)


class RequestHeaders:
    """A request's header fields, read by :func:`read_headers`: what
    gevent 26's pywsgi asks of its ``MessageClass`` (``get``,
    ``getheader``, ``typeheader``, ``del``, ``status``), and the
    environ's ``HTTP_*`` items worked out once (:attr:`environ`).

    :ivar fields: ``(lowercase name, value)`` of every field, in order.
    :ivar environ: ``(HTTP_NAME, value)`` of every field but
        ``Content-Type``, ``Content-Length`` and those whose name holds a
        ``_`` (gevent drops them: ``X_Forwarded_For`` and
        ``X-Forwarded-For`` would be one CGI name), in order; gevent's
        ``get_environ`` joins repeated ones.
    """

    __slots__ = ("_first", "environ", "fields")

    #: gevent's: a parse error, ``""`` for none (errors raise here).
    status = ""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.environ: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        """Add the field *name*: *value* (*value* stripped)."""
        lower = name.lower()
        self.fields.append((lower, value))
        self._first.setdefault(lower, value)
        if "_" not in name and lower not in ("content-type", "content-length"):
            self.environ.append(("HTTP_" + name.upper().replace("-", "_"), value))

    def get(self, name: str, default: Any = None) -> Any:
        """The value of the first field *name* (any case), or *default*."""
        return self._first.get(name.lower(), default)

    getheader = get

    def get_all(self, name: str) -> list[str]:
        """The values of every field *name*, in order."""
        lower = name.lower()
        return [value for key, value in self.fields if key == lower]

    @property
    def typeheader(self) -> str | None:
        """gevent's: the ``Content-Type``."""
        return self._first.get("content-type")

    def __delitem__(self, name: str) -> None:
        # gevent's: a chunked request's Content-Length is dropped.
        lower = name.lower()
        self._first.pop(lower, None)
        self.fields = [(key, value) for key, value in self.fields if key != lower]


def read_headers(rfile: Any) -> RequestHeaders:
    """Read a request's header lines from *rfile* up to the empty line.

    :raises ValueError: a line that is not a header field (obs-fold, a
        space before the colon, a control character, no colon), a line
        over :data:`MAX_HEADER_LINE` bytes, more than :data:`MAX_HEADERS`
        lines, or the end of the stream before the empty line.
    """
    headers = RequestHeaders()
    match = _FIELD_LINE.fullmatch
    for _ in range(MAX_HEADERS + 1):
        raw = rfile.readline(MAX_HEADER_LINE + 1)
        if raw == b"\r\n" or raw == b"\n":
            return headers
        if len(raw) > MAX_HEADER_LINE:
            raise ValueError(
                f"Line too long: a header line over {MAX_HEADER_LINE} bytes"
            )
        if not raw:
            raise ValueError("the request ends before its headers do")
        line = raw.decode("latin-1")
        field = match(line)
        if field is None:
            if line[0] in " \t":
                # RFC 9112, 5.2: a server may refuse it, as llhttp does.
                raise ValueError(f"obsolete line folding: {line!r}")
            raise ValueError(f"invalid header line: {line!r}")
        headers.add(field[1], field[2].strip(" \t"))
    raise ValueError(f"more than {MAX_HEADERS} header lines")


def check_framing(headers: RequestHeaders, version: str) -> None:
    """Refuse what would make where a request's body ends ambiguous, the
    way requests are smuggled past a proxy that reads it otherwise
    (RFC 9112, 6.1 and 6.3): a ``Content-Length`` that is not digits, or
    given twice with different values; a ``Transfer-Encoding`` other than
    ``chunked`` alone, or beside a ``Content-Length``, or in an HTTP/1.0
    request. gevent took the first ``Content-Length`` (through ``int()``:
    ``+5`` and ``5_0`` too) and any ``Transfer-Encoding`` but ``chunked``
    for none.

    :raises ValueError: the request is refused.
    """
    lengths = headers.get_all("content-length")
    if lengths:
        if not all(value.isascii() and value.isdigit() for value in lengths):
            raise ValueError(f"Invalid Content-Length: {lengths[0]!r}")
        if len(set(lengths)) > 1:
            raise ValueError("conflicting Content-Length headers")
    codings = headers.get_all("transfer-encoding")
    if codings:
        if lengths:
            raise ValueError("both Transfer-Encoding and Content-Length")
        if version != "HTTP/1.1":
            raise ValueError(f"Transfer-Encoding in an {version} request")
        if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
            raise ValueError(f"unsupported Transfer-Encoding: {', '.join(codings)!r}")


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

    Every long poll is one request and one response, so the per-request
    work is the cost of polling delivery (see the README's Benchmarks):
    a response's headers and body (up to :attr:`COALESCE_LIMIT` bytes)
    go out in one ``sendall``; the ``Date`` header is formatted once a
    second; the access log line is not formatted when its logger would
    drop it. These override gevent 26's ``_write_with_headers`` and
    ``_sendall`` (versions.cfg pins it; tests/test_server.py fails if
    they stop being called).
    """

    #: gevent's: the ``Date`` header the application gave, if any.
    provided_date: bytes | None
    #: gevent's: the request's headers; ``None`` once a WebSocket's are
    #: dropped.
    headers: Any
    #: gevent's: the response's status code, negative after a socket
    #: error (its access log line says so).
    code: int

    def handle(self) -> None:
        # The peer's address, until the application knows better (a
        # trusted proxy's X-Forwarded-For): gevent's own refusals of
        # malformed HTTP are logged with it.
        peer = self.client_address
        logs.CLIENT.set(peer[0] if isinstance(peer, tuple) else None)
        super().handle()

    #: Whether a WebSocket transport adopted the connection (see
    #: :meth:`adopt`): the request ends without closing it.
    adopted = False
    #: gevent's: the connection; ``None`` once adopted.
    socket: Any

    def run_application(self) -> None:
        websocket = is_websocket_request(self.environ)
        if websocket:
            # Parsed into the environ already, and a WebSocket's request
            # may last as long as the connection (memory per idle
            # connection).
            self.headers = None
            self.environ[ADOPT] = self.adopt
        try:
            super().run_application()
        finally:
            # Not kept beyond the request (the environ is, by the session).
            self.environ.pop(ADOPT, None)
        if self.status is None or websocket:
            self.close_connection = True

    def adopt(self, transport: Any) -> Callable[[], None]:
        """Give the connection to WebSocket *transport* for the rest of
        its life (:data:`~.websocket.ADOPT`): the request returns without
        closing it, its access log line waits for the end. Return what
        the transport calls once it is done with the socket: the server
        closes it then."""
        sock, self.socket = self.socket, None  # gevent's handle() leaves it
        self.adopted = True
        client = self.client_address
        if isinstance(client, tuple):
            client = client[0]
        server: Server = self.server
        request = (client, self.requestline, self.time_start)
        return server.adopt(sock, transport, request)

    def log_request(self) -> None:
        # gevent formats the line (a clock read, a datetime, a string)
        # before its logging adapter hands it to a logger that may drop it.
        if self.adopted or not access_logger.isEnabledFor(logging.INFO):
            return  # an adopted WebSocket's line is written at its end
        # No environ for a request gevent could not parse (its 400).
        environ = self.environ or {}
        if (isinstance(self.code, int) and self.code >= 400) or environ.get(REFUSED):
            with logs.client_fault():
                super().log_request()
        else:
            super().log_request()

    def MessageClass(self, rfile: Any, *args: Any) -> RequestHeaders:
        """The request's headers, read by :func:`read_headers` and checked
        by :func:`check_framing`, where gevent runs :mod:`http.client`'s
        parser (``email.parser``'s, a fifth of the server's time at 1,000
        polling clients: README "Benchmarks"), which takes a folded line,
        a space before a colon or a line with none, and drops what follows
        such a line."""
        headers = read_headers(rfile)
        check_framing(headers, self.request_version)
        return headers

    def _check_http_version(self) -> bool:
        # gevent's parses the version into a tuple of ints, per request.
        if self.request_version in ("HTTP/1.1", "HTTP/1.0"):
            return True
        result: bool = super()._check_http_version()
        return result

    def _headers(self) -> Iterable[tuple[str, str]]:
        # gevent's splits every header line again, per request.
        headers: RequestHeaders = self.headers
        return headers.environ

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

    def finalize_headers(self) -> None:
        # gevent formats the Date header anew for every response; it
        # changes once a second.
        if self.provided_date is None:
            date = http_date()
            self.response_headers.append((b"Date", date))
            self.provided_date = date  # gevent adds none then
        super().finalize_headers()

    #: Most bytes of a body sent in one ``sendall`` with its headers.
    COALESCE_LIMIT = 65536

    #: What :meth:`_sendall` gathers instead of sending, while
    #: :meth:`_write_with_headers` runs.
    _held: bytearray | None = None

    def _write_with_headers(self, data: bytes) -> None:
        """Send the headers and the first part of the body (a poll's whole
        answer) in one ``sendall``: gevent 26 sends each on its own, with
        ``TCP_NODELAY`` two segments, two system calls each side."""
        if len(data) > self.COALESCE_LIMIT:
            super()._write_with_headers(data)
            return
        self._held = held = bytearray()
        try:
            super()._write_with_headers(data)
        finally:
            self._held = None
        self._send(held)

    def _send(self, data: bytearray) -> None:
        """gevent's ``_sendall`` of *data*, in one ``send()`` when the
        kernel takes it all (a poll's answer): gevent's socket ``sendall``
        asks the kernel for the socket's send buffer size first, every
        call."""
        try:
            sent = self.socket.send(data)
            if sent < len(data):
                self.socket.sendall(memoryview(data)[sent:])
        except OSError as exc:
            # What gevent's _sendall records for its access log line.
            self.status = f"socket error: {exc}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def _sendall(self, data: bytes) -> None:
        held = self._held
        if held is None:
            super()._sendall(data)
        else:
            held += data


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
    #: limit is reached the server stops accepting until a connection ends
    #: (the others wait in the kernel's backlog): the command line sets it
    #: from the open files limit (:func:`.limits.connection_limit`), so that
    #: a crowd meets a full server, not ``accept()`` failing for want of a
    #: descriptor (a traceback each time, from gevent).
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

    def __init__(
        self,
        address: tuple[str, int],
        application: WSGIApplication,
        *,
        max_connections: int | None = None,
    ) -> None:
        if max_connections is not None:
            self.max_connections = max_connections
        super().__init__(
            address,
            application,
            # Unbounded: max_connections bounds open_connections instead,
            # which counts the adopted WebSockets too.
            spawn=gevent.pool.Pool(),
            log=access_logger,
            error_log=logger,
            # Spares gevent a reverse DNS lookup (getfqdn) at start.
            environ={"SERVER_NAME": address[0]},
        )
        #: Accepted connections not closed yet (see the module).
        self.open_connections = 0
        #: The WebSocket transports that adopted their connection, by
        #: socket, with what their access log line says.
        self.adopted: dict[Any, tuple[Any, tuple[Any, ...]]] = {}
        self._none_adopted = gevent.event.Event()
        self._none_adopted.set()
        # gevent's set_spawn() put the pool's full() here.
        self.full = self._full

    def _full(self) -> bool:
        """Whether :attr:`max_connections` connections are open: gevent
        stops accepting then, until :meth:`_closed` starts it again."""
        limit = self.max_connections
        return limit is not None and self.open_connections >= limit

    def _closed(self) -> None:
        """One connection fewer: accept again if the limit stopped it."""
        self.open_connections -= 1
        if self.max_connections is not None and not self._full():
            self._start_accepting_if_started()

    def adopt(
        self, sock: gevent.socket.socket, transport: Any, request: tuple[Any, ...]
    ) -> Callable[[], None]:
        """Count *sock* open while WebSocket *transport* reads it from the
        event loop, after its request returned (see :meth:`Handler.adopt`);
        *request* is what its access log line says (the client, the
        request line, when it began). Return what the transport calls at
        its end: the socket is closed and the line written."""
        self.adopted[sock] = (transport, request)
        self._none_adopted.clear()
        return lambda: self._release(sock)

    def _release(self, sock: gevent.socket.socket) -> None:
        entry = self.adopted.pop(sock, None)
        if entry is None:
            return
        self.do_close(sock)
        self._closed()
        if not self.adopted:
            self._none_adopted.set()
        transport, (client, requestline, started) = entry
        if access_logger.isEnabledFor(logging.INFO):
            now = datetime.datetime.now().replace(microsecond=0)
            # gevent's format (WSGIHandler.format_request).
            elapsed = time.time() - started
            request = requestline or ""
            line = f'{client or "-"} - - [{now}] "{request}" 101 - {elapsed:.6f}'
            if transport.request_environ.get(REFUSED):
                with logs.client_fault():
                    access_logger.info(line)
            else:
                access_logger.info(line)

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
            # Accepted connections inherit them where the system does
            # that (Linux): see handle().
            set_nodelay(sock)
            set_keepalive(
                sock,
                cls.tcp_keepalive_idle,
                cls.tcp_keepalive_interval,
                cls.tcp_keepalive_count,
            )
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
        deadline = time.monotonic() + timeout
        joined = self.pool.join(timeout=timeout)
        adopted = self._none_adopted.wait(max(0.0, deadline - time.monotonic()))
        if joined and adopted:
            return
        logger.warning(
            "Killing %d connection(s) still open after %g s",
            len(self.pool) + len(self.adopted),
            timeout,
        )
        for transport, _request in list(self.adopted.values()):
            transport.abort()  # its reading greenlet ends it, then _release
        self.pool.kill(block=True, timeout=1)
        if not self._none_adopted.wait(1):
            for sock in list(self.adopted):
                self.adopted[sock][0].forget()
                self._release(sock)

    def do_handle(self, sock: gevent.socket.socket, address: Any) -> None:
        """gevent's: handle the accepted connection in a greenlet of the
        pool, then close it; without gevent's ``handle(*args)`` in between,
        a C recursion whose C stack every WebSocket's greenlet kept in the
        heap as long as the connection lived (0.8 KiB)."""
        self.open_connections += 1
        try:
            if self._spawn is None:
                self._handle_and_close(sock, address)
            else:
                self._spawn(self._handle_and_close, sock, address)
        except BaseException:
            self.do_close(sock, address)
            self._closed()
            raise

    def _handle_and_close(self, sock: gevent.socket.socket, address: Any) -> None:
        try:
            self._handle(sock, address)
        finally:
            # An adopted WebSocket is closed at its end (_release).
            if sock not in self.adopted:
                self.do_close(sock, address)
                self._closed()

    #: Whether accepted connections come with the TCP options of
    #: :meth:`handle` already, inherited from the listening socket (which
    #: :meth:`get_listener` gave them); found on the first connection.
    _inherits_tcp_options: bool | None = None

    def handle(self, sock: gevent.socket.socket, address: Any) -> None:
        """Handle one accepted connection, with Nagle's algorithm off and
        TCP keepalive on: inherited from the listening socket where the
        system does that (Linux, checked once), else set here (five system
        calls, for every connection: a polling client's often are new)."""
        try:
            inherits = self._inherits_tcp_options
            if inherits is None:
                wanted = (
                    self.tcp_keepalive_idle,
                    self.tcp_keepalive_interval,
                    self.tcp_keepalive_count,
                )
                inherits = self._inherits_tcp_options = tcp_options(sock) == wanted
            if not inherits:
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


def make_server(
    config: Config, wsgi_app: WSGIApplication, *, max_connections: int | None = None
) -> Server:
    """Build (not start) the server listening where *config* says, handling
    at most *max_connections* connections at once (:attr:`Server.max_connections`)."""
    # An instance's __call__ is reached through a C recursion, a bound
    # method is not (see Application._wsgi_app).
    call = wsgi_app
    if not (inspect.isfunction(wsgi_app) or inspect.ismethod(wsgi_app)):
        # mypy 2.4 takes a Callable's own __call__ for "not callable".
        call = wsgi_app.__call__  # type: ignore[operator]
    return Server(
        (config.interface, config.port), call, max_connections=max_connections
    )
