"""Caps that keep one client, or a crowd of them, from exhausting the server.

:class:`Limits` is mixed into python-engineio's server
(:class:`~oe_web_socketio.sockets.EngineIOServer`); it overrides public
methods only (``create_queue``, ``send_packet``, ``handle_request``,
``start_background_task``, ``shutdown``) and holds three caps:

* **What is queued for one session** (:attr:`Limits.max_queued_bytes`).
  python-engineio queues every packet for a session in an unbounded queue
  that its next poll (long-polling) empties; over WebSocket, the
  transport's output buffer takes the queue's place (see
  :mod:`oe_web_socketio.websocket`). A client that stops reading its
  socket while messages fan out makes it grow until the ping timeout ends
  the session, 45 s later by default: 1 MiB a second for one such client
  at 100 messages of 10 KB a second. Here each session's queue
  (:class:`PacketQueue`) counts the bytes of the messages it holds; a
  message that would take it past the cap, while the client is not taking
  what it is sent (the kernel refused its WebSocket's last bytes, or no
  poll of it is waiting), is not queued, and the session is closed at once
  with one log line. A backlog the server made itself, too busy to write
  to clients that read, is let through: cutting those clients would not
  help them. The messages already queued are dropped, so their memory goes
  back at once. The other sessions are not touched: the refusal happens in
  the emitting greenlet, before the packet is queued, and costs a
  comparison.
* **Sessions per process** (:attr:`Limits.max_connections`): a handshake
  beyond it is answered ``503 Service Unavailable`` with ``Retry-After``
  and no session is created; the refusals are logged at most once every
  :data:`LOG_INTERVAL` seconds, with their count. Every session holds a
  file descriptor (a WebSocket its connection, a polling client the
  connection of its pending poll), so the cap follows from the process's
  open files limit when it is not set (:func:`session_limit`): a server
  past that limit could not accept a connection, nor open one to its
  database, for any client. :func:`raise_open_files_limit` first raises
  the soft limit to the hard one (:func:`set_limits` does, as the
  application is built, whether by the command line or a WSGI host).
* **Sessions that never join a namespace** (:attr:`Limits.connect_timeout`):
  an Engine.IO handshake costs a session, a queue and a ping greenlet until
  its ping timeout; one that has not asked for a Socket.IO namespace within
  this many seconds is closed, as the reference server's ``connectTimeout``
  does, so that handshakes nobody uses cannot hold the sessions of
  :attr:`max_connections` for long.

Invariants: a :class:`PacketQueue`'s :attr:`~PacketQueue.queued_bytes` is
the sum of the sizes (:func:`packet_size`) of the messages in it; it never
exceeds the cap, except by one message put into an empty queue (a single
message larger than the cap is delivered, not refused). Packets taken by a
writer or a poll no longer count, so one session holds at most about twice
the cap: what its writer is sending, and what waits behind it.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.queue
from engineio import packet as eio_packet
from engineio import socket as eio_socket

from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ConfigError, QueueFull
from oe_web_socketio.websocket import abort_transport, ping_later, websocket_of

logger = logging.getLogger(__name__)

#: Seconds between two log lines about refused handshakes.
LOG_INTERVAL = 10.0

#: python-engineio's wait for a session's next ping (a greenlet each).
_SEND_PING = eio_socket.Socket._send_ping

#: Descriptors kept free beyond those :func:`reserved_descriptors` counts:
#: log files, a polling client's POST beside its pending poll, held Tryton
#: bus polls, static files being sent, name lookups.
DESCRIPTOR_MARGIN = 100


def packet_size(item: Any) -> int:
    """The bytes a queued item counts for: the length of a ``MESSAGE``
    packet's data (python-socketio hands Engine.IO ASCII JSON text, so
    characters are bytes, or bytes for binary attachments); ``0`` for
    control packets (open, ping, close, noop: a few bytes each, never
    refused, so that a session can always be closed) and for the ``None``
    that tells a writer to stop."""
    if (
        not isinstance(item, eio_packet.Packet)
        or item.packet_type != eio_packet.MESSAGE
    ):
        return 0
    data = item.data
    if isinstance(data, str | bytes):
        return len(data)
    return len(str(data))  # a dict or list, JSON-encoded by Engine.IO


class PacketQueue:
    """The packet queue of one Engine.IO session, bounded in bytes: a
    :class:`gevent.queue.JoinableQueue` (what python-engineio uses: ``put``,
    ``get``, ``get_nowait``, ``task_done``, ``join``), whose storage is
    allocated when first used and freed once a WebSocket takes the
    session's packets (:meth:`release`): its three deques were 2.3 KiB of
    every idle WebSocket (README "Benchmarks").

    :param limit: most bytes of messages held (see the module's invariants).

    :ivar queued_bytes: bytes of the messages held now.
    :ivar created: :func:`time.monotonic` when the session began.
    :ivar used: whether a message was ever queued, that is whether the
        session has asked for a namespace (the server's first message is
        the answer to that request).
    """

    __slots__ = (
        "_items",
        "created",
        "limit",
        "queued_bytes",
        "sink",
        "used",
        "waiting",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued_bytes = 0
        self.created = time.monotonic()
        self.used = False
        self.waiting = 0
        #: The WebSocket transport that takes every item once attached
        #: (:meth:`.WebSocketTransport.attach`), or ``None``: items wait
        #: here for a poll.
        self.sink: Any = None
        #: The items, once a first one was queued or waited for.
        self._items: gevent.queue.JoinableQueue | None = None

    def _queue(self) -> gevent.queue.JoinableQueue:
        items = self._items
        if items is None:
            items = self._items = gevent.queue.JoinableQueue()
        return items

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the next item; :attr:`waiting` counts the greenlets in
        here (a poll of the client waiting for news).

        :raises gevent.queue.Empty: nothing came (in *timeout* seconds).
        """
        self.waiting += 1
        try:
            item = self._queue().get(block, timeout)
        finally:
            self.waiting -= 1
        self.queued_bytes -= packet_size(item)
        return item

    def get_nowait(self) -> Any:
        """Take the next item without waiting.

        :raises gevent.queue.Empty: there is none.
        """
        return self.get(False)

    def task_done(self) -> None:
        """An item taken is dealt with (see :meth:`join`)."""
        if self._items is None:
            raise ValueError("task_done() called too many times")
        self._items.task_done()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put is dealt with; whether it is."""
        items = self._items
        return True if items is None else bool(items.join(timeout))

    def qsize(self) -> int:
        """The items held now."""
        return 0 if self._items is None else self._items.qsize()

    def put(
        self,
        item: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Queue *item*.

        :param force: queue it even past the cap.
        :raises QueueFull: it is a message that would take the queue past
            its cap; it is not queued.
        """
        size = packet_size(item)
        if size:
            self.used = True
        sink = self.sink
        if sink is not None:
            # The WebSocket's output buffer is the queue (it may raise
            # QueueFull the same way).
            sink.put(item, force=force)
            return
        if (
            size
            and not force
            and self.queued_bytes
            and self.queued_bytes + size > self.limit
        ):
            raise QueueFull(self.queued_bytes, size, self.limit)
        self._queue().put(item, block, timeout)
        self.queued_bytes += size

    def release(self) -> None:
        """Free the storage if nothing is held, waited for or unfinished
        (a WebSocket took the queue over: see :attr:`sink`); it is
        allocated again if used."""
        items = self._items
        if items is not None and not (
            items.qsize() or items.unfinished_tasks or self.waiting
        ):
            self._items = None

    def discard(self) -> int:
        """Drop every item queued; return the bytes freed."""
        if self.sink is not None:
            return int(self.sink.discard())
        freed = self.queued_bytes
        while True:
            try:
                self.get_nowait()
            except gevent.queue.Empty:
                break
            self.task_done()
        return freed


class ThrottledLog:
    """Log a kind of event at most once every *interval* seconds, saying
    how many happened since the last line.

    :param interval: seconds between two lines.
    """

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last = -float("inf")
        self._count = 0

    def __call__(self, message: str, *args: Any) -> None:
        """Count one event; log *message* % *args* if the last line is
        older than the interval (with the number of events it covers)."""
        self._count += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        if self._count > 1:
            logger.warning(
                message + " (%d times in %.0f s)", *args, self._count, now - self._last
            )
        else:
            logger.warning(message, *args)
        self._last = now
        self._count = 0


class Limits:
    """Caps of a python-engineio server (gevent mode); a mixin, placed
    before ``engineio.Server`` in the bases.

    Set the caps after the server is built (``None``: no cap). See the
    module's documentation for what each one does.
    """

    #: Most bytes of messages queued for one session, or ``None``.
    max_queued_bytes: int | None = None
    #: Most Engine.IO sessions at once, or ``None``.
    max_connections: int | None = None
    #: Most connections the HTTP server should handle at once, for the
    #: descriptors they hold, or ``None`` (see :func:`connection_limit`;
    #: the command line and :meth:`.wsgi.SocketIOMiddleware.run` give it
    #: to :class:`~.server.Server`).
    max_open_connections: int | None = None
    #: The soft limit of open files before and after :func:`set_limits`
    #: raised it, for the log line at start (:func:`describe_open_files`).
    open_files: tuple[int, int] | None = None
    #: Seconds a refused handshake is told to wait (``Retry-After``).
    retry_after: int = 5
    #: Seconds a session may go without asking for a namespace, or ``None``.
    connect_timeout: float | None = None

    #: How a session's client is named in log lines: a function of its sid
    #: (the Socket.IO server sets it; by default, the sid alone).
    describe_client: Callable[[str], str] = staticmethod(lambda sid: sid)

    _sweeper: gevent.Greenlet | None = None
    _refusals: ThrottledLog | None = None

    # python-engineio's attributes, for the type checker.
    sockets: dict[str, Any]

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        """A session's queue (python-engineio calls this once per
        session): bounded when a cap is set; a WebSocket takes it over
        (see :attr:`PacketQueue.sink`)."""
        limit = self.max_queued_bytes
        return PacketQueue(limit if limit is not None else 2**63)

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        """python-engineio's, except for a session's next ping: a timer of
        the event loop (:func:`~.websocket.ping_later`) instead of a
        greenlet that sleeps ``ping_interval`` (python-engineio 4.15.1's
        ``Socket.schedule_ping`` starts ``Socket._send_ping`` here).

        A client's event (python-socketio's ``_handle_event_internal``)
        starts the usual way, at the next turn of the loop: switched to at
        once from the greenlet that read it, each event of a burst wrote
        its frames before the next was read, which undid the coalescing
        of a turn's frames into one write per socket (server CPU per
        delivery at 1,000 WebSocket clients 8.4 → 18.4 µs, polling about
        doubled; bench/README.md).
        """
        if getattr(target, "__func__", None) is _SEND_PING and not args:
            ping_later(target.__self__, self.ping_interval)  # type: ignore[attr-defined]
            return None
        return super().start_background_task(target, *args, **kwargs)  # type: ignore[misc]

    def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        """Queue *pkt* for session *sid*; close the session instead when
        that would take its queue past :attr:`max_queued_bytes`.

        Every packet of python-socketio comes through here, one call per
        recipient of a fan-out: a refusal must not raise, or the emitting
        loop would skip the recipients after this one. A session whose
        WebSocket is attached gets the packet straight in its queue, which
        hands it to the transport: python-engineio's ``send_packet`` would
        look the session up again, check its ping timeout (the service
        task does, for every session) and call its logger, per recipient;
        the queue would measure the packet, which the transport does not
        need (its cap counts the frames it holds).
        """
        socket: Any = self.sockets.get(sid)
        try:
            sink = socket.queue.sink if socket is not None else None
            if sink is not None and not socket.closed:
                # What PacketQueue.put does for a message, without its size.
                socket.queue.used = True
                sink.put(pkt)
            else:
                super().send_packet(sid, pkt)  # type: ignore[misc]
        except QueueFull as exc:
            socket = self.sockets.get(sid)
            if socket is not None and not self.is_reading(socket):
                self.close_slow_reader(sid, exc)
            elif socket is not None:
                # The backlog is the server's (busy), not the client's.
                socket.queue.put(pkt, force=True)

    @staticmethod
    def is_reading(socket: Any) -> bool:
        """Whether the client of python-engineio's *socket* takes what it
        is sent right now, so that a backlog is the server's own (too busy
        to write), for which the client must not be cut: over WebSocket,
        the kernel took the last bytes written to it (no write watcher
        waits for the client to read); over polling, a poll of the client
        waits for news."""
        transport = websocket_of(socket)
        if transport is not None:
            return not transport.blocked
        return bool(socket.queue.waiting)

    def close_slow_reader(self, sid: str, exc: QueueFull) -> None:
        """Close session *sid*, whose client does not read what it is
        sent fast enough; drop what is queued for it; log one line."""
        socket = self.sockets.get(sid)
        if socket is None or socket.closing or socket.closed:
            return
        logger.warning(
            "Closing session %s: it does not read what it is sent (%s)",
            self.describe_client(sid),
            exc,
        )
        socket.queue.discard()
        # No close packet nor close frame: they would wait behind what the
        # client does not read. A WebSocket is cut, a poll (if one ever
        # comes) answered 400.
        abort_transport(socket)
        socket.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)  # type: ignore[attr-defined]

    def handle_request(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """python-engineio's entry point, refusing a handshake beyond
        :attr:`max_connections` with ``503`` and ``Retry-After``."""
        if (
            self.max_connections is not None
            and len(self.sockets) >= self.max_connections
            and environ.get("REQUEST_METHOD") == "GET"
            and "sid" not in urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        ):
            return self._refuse_handshake(start_response)
        if self.connect_timeout is not None and self._sweeper is None:
            self._sweeper = gevent.spawn(self._close_unused, self.connect_timeout)
        result: Iterable[bytes] = super().handle_request(environ, start_response)  # type: ignore[misc]
        return result

    def _refuse_handshake(self, start_response: Callable[..., Any]) -> list[bytes]:
        if self._refusals is None:
            self._refusals = ThrottledLog()
        self._refusals(
            "Refusing a new session: %d sessions open (max_connections)",
            len(self.sockets),
        )
        body = b"Too many connections, try again later"
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(self.retry_after)),
            ],
        )
        return [body]

    def _close_unused(self, timeout: float) -> None:
        """Every half *timeout*, close the sessions older than *timeout*
        that never asked for a namespace (one line per sweep that closed
        some)."""
        while True:
            gevent.sleep(max(timeout / 2, 0.5))
            limit = time.monotonic() - timeout
            unused = [
                socket
                for socket in list(self.sockets.values())
                if isinstance(socket.queue, PacketQueue)
                and not socket.queue.used
                and socket.queue.created < limit
                and not (socket.closing or socket.closed)
            ]
            for socket in unused:
                reason = self.reason.SERVER_DISCONNECT  # type: ignore[attr-defined]
                socket.close(wait=False, abort=True, reason=reason)
                self.sockets.pop(socket.sid, None)
            if unused:
                logger.info(
                    "Closed %d session(s) that asked for no namespace within %g s",
                    len(unused),
                    timeout,
                )

    def shutdown(self) -> None:
        """Stop the background tasks, the sweeper of unused sessions too."""
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
            self._sweeper = None
        super().shutdown()  # type: ignore[misc]


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files (``RLIMIT_NOFILE``) to
    its hard limit, which any process may do; return the soft limit before
    and after. It stays where it is when the hard limit is unlimited (Linux
    refuses that as a soft limit) or the system refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or hard == resource.RLIM_INFINITY:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def descriptors_in_use() -> int:
    """The file descriptors this process holds now (``0`` where the system
    does not say: Linux's ``/proc/self/fd`` only)."""
    try:
        # Less the descriptor of the listing itself.
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        return 0


def reserved_descriptors(config: Config) -> int:
    """The descriptors a server of *config* holds besides its clients':
    those open now, its listening socket, for each database its cursor
    pool (``max_cursor``), trytond's pool (up to ``2 * n + 1`` for *n*
    :attr:`~oe_web_socketio.config.Config.orm_transactions`, see
    :mod:`oe_web_socketio.hosts.tryton.orm`) and the bridge's ``LISTEN``
    connection, and :data:`DESCRIPTOR_MARGIN`."""
    per_database = config.max_cursor + (2 * config.orm_transactions + 1) + 1
    return (
        descriptors_in_use()
        + 1
        + len(config.databases) * per_database
        + DESCRIPTOR_MARGIN
    )


def connection_limit(
    open_files: int, reserved: int, per_session: int = 1
) -> int | None:
    """The connections a server whose open files limit is *open_files*,
    holding *reserved* descriptors besides its connections' *per_session*
    each, may handle at once (:attr:`.server.Server.max_connections`):
    ``None`` when the limit is unlimited."""
    if open_files == resource.RLIM_INFINITY:
        return None
    return max(0, (open_files - reserved) // per_session)


def session_limit(
    config: Config, open_files: int, reserved: int, per_session: int = 1
) -> int | None:
    """The :attr:`Limits.max_connections` of a server of *config* whose
    open files limit is *open_files*, holding *reserved* descriptors
    besides its sessions' *per_session* each: :attr:`.Config.max_connections`
    if set (``None`` for ``0``, no cap), else the :func:`connection_limit`
    less :func:`refusal_headroom`, so that a crowd coming back at once is
    answered ``503`` rather than left waiting to be accepted.

    :raises ConfigError: the setting is above what fits, or nothing fits.
        Refused rather than lowered with a warning: a number the
        administrator wrote is capacity planned on, and a shortfall is
        better seen at start, while someone watches, than as refusals at
        the busiest hour; left as it is, past the limit the server would
        fail to accept anyone, or to connect to its database.
    """
    setting = config.max_connections
    if setting == 0:
        return None
    fits = connection_limit(open_files, reserved, per_session)
    if fits is None:
        return setting
    if setting is None and fits > refusal_headroom(fits):
        return fits - refusal_headroom(fits)
    if setting is not None and setting <= fits:
        return setting
    remedy = "raise the hard limit of open files (ulimit -Hn, systemd's LimitNOFILE)"
    if setting is None:
        problem = f"the open files limit ({open_files}) leaves no room for clients"
    else:
        problem = (
            f"{setting} sessions need about {setting * per_session + reserved} "
            f"open files, the limit is {open_files}"
        )
        remedy += f" or set max_connections to {fits} or less"
    raise ConfigError(
        f"{problem} ({reserved} for the server itself): {remedy}",
        key="max_connections",
    )


def refusal_headroom(connections: int) -> int:
    """Of *connections*, those kept to answer refused handshakes: 2 %, at
    least 10 (a crowd's clients connect a few hundred at a time)."""
    return max(10, connections // 50)


def set_limits(eio: Limits, config: Config) -> None:
    """Raise this process's soft limit of open files to the hard one
    (:func:`raise_open_files_limit`, the limits before and after kept in
    :attr:`Limits.open_files`), then give *eio* the caps of *config*
    (``0`` there: no cap), the number of sessions following from the open
    files limit when not set (see :func:`session_limit`). Every way of
    serving builds its application through here: the command line, and
    :class:`~oe_web_socketio.wsgi.SocketIOMiddleware` in a WSGI host.

    :raises ConfigError: :attr:`.Config.max_connections` is more than the
        open files limit allows.
    """
    eio.open_files = raise_open_files_limit()
    eio.max_queued_bytes = config.max_queued_bytes or None
    open_files = eio.open_files[1]
    reserved = reserved_descriptors(config)
    # One descriptor a session: a WebSocket's accepted connection
    # (oe_web_socketio.websocket duplicates none), a poll's connection.
    eio.max_connections = session_limit(config, open_files, reserved)
    eio.max_open_connections = connection_limit(open_files, reserved)
    eio.connect_timeout = config.connect_timeout or None


def describe_open_files(eio: Limits, connections: int | None) -> str:
    """The log line saying the open files limit :func:`set_limits` left
    *eio* and the sessions and *connections* (the HTTP server's
    :attr:`~.server.Server.max_connections`) it allows."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    before, limit = eio.open_files or (soft, soft)
    raised = f" (raised from {before})" if limit != before else ""
    capped = [
        f"{name} {value}" if value is not None else f"no {name}"
        for name, value in (
            ("max_connections", eio.max_connections),
            ("connections at once", connections),
        )
    ]
    return f"Open files limit {limit}{raised}; {', '.join(capped)}"
