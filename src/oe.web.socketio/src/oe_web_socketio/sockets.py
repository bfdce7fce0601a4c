"""Which namespace class serves which path, and the Socket.IO server.

:class:`SocketIO` registers :class:`~oe_web_socketio.namespace.Namespace`
classes on a python-socketio :class:`Server`: from code
(:meth:`SocketIO.add_namespace`), from ``PATH=module:Class`` specifications
(the ``namespaces`` setting, ``-n`` on the command line), and from the
entry point group :data:`ENTRY_POINT_GROUP`, through which an integrator's
own distribution adds namespaces without editing this project::

    [project.entry-points."oe_web_socketio.namespaces"]
    chat = "my_egg.chat:ChatNamespace"    # served at /chat

An entry point's name is the path without its leading slash, unless the
class sets :attr:`~oe_web_socketio.namespace.Namespace.path`. Each
registration is logged, ``Add namespace: '/chat' -> my_egg.chat.ChatNamespace
(entry point …)``; a path registered twice is an error naming both.

A connection to a path nobody registered is refused with the reason
``unknown namespace '/x'`` and one log line (see
:class:`~oe_web_socketio.dispatcher.UnknownNamespace`).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import io
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import engineio
import engineio.exceptions
import socketio
from engineio import packet as eio_packet
from engineio import payload as eio_payload

from oe_web_socketio import auth, logs
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.dispatcher import Dispatcher, DispatchSettings, UnknownNamespace
from oe_web_socketio.exceptions import (
    DuplicateNamespaceError,
    EngineIOPacketError,
    NamespaceError,
)
from oe_web_socketio.limits import Limits
from oe_web_socketio.namespace import Namespace
from oe_web_socketio.protocol import (
    CLOSE_POLICY_VIOLATION,
    decode_engineio_payload,
)
from oe_web_socketio.server import is_websocket_request
from oe_web_socketio.websocket import close_session

logger = logging.getLogger(__name__)

#: The entry point group of namespace classes.
ENTRY_POINT_GROUP = "oe_web_socketio.namespaces"

#: A Socket.IO namespace path: ``/``, ``/chat``, ``/a/b``. No ``,`` (the
#: packet separator), ``?`` (a query) or space.
PATH = re.compile(r"/[^\s,?#*]*")


@dataclasses.dataclass(frozen=True)
class Registration:
    """A namespace class registered at a path.

    :ivar origin: where the registration comes from, for messages.
    """

    path: str
    namespace_class: type[Namespace]
    origin: str

    def __str__(self) -> str:
        cls = self.namespace_class
        return f"{cls.__module__}.{cls.__qualname__} ({self.origin})"


def parse_query(query: str) -> dict[str, list[str]]:
    """:func:`urllib.parse.parse_qs` of *query*, without its percent- and
    plus-decoding of every name and value when the query has neither
    ``%`` nor ``+`` (a poll's ``EIO=4&transport=polling&t=…&sid=…``):
    a tenth of its cost, for every polling request."""
    if "%" in query or "+" in query:
        return urllib.parse.parse_qs(query)
    fields: dict[str, list[str]] = {}
    for field in query.split("&"):
        name, _, value = field.partition("=")
        if value:  # parse_qs drops blank values
            fields.setdefault(name, []).append(value)
    return fields


class EngineIOServer(Limits, engineio.Server):
    """python-engineio's server, whose :meth:`disconnect` does not wait,
    with the caps of :class:`~oe_web_socketio.limits.Limits`, and whose
    session ids name the worker that made them (:meth:`generate_id`)."""

    #: ``<worker>.`` (:attr:`Config.worker <oe_web_socketio.config.Config.worker>`),
    #: the start of every id :meth:`generate_id` makes; empty for a lone
    #: server. Set by :func:`name_worker`.
    sid_prefix = ""

    def generate_id(self) -> str:
        """python-engineio's id (12 random bytes and a sequence number,
        URL-safe base64: unguessable), after :attr:`sid_prefix`.

        The reverse proxy in front of several workers reads the prefix of
        a request's ``sid`` to send every request of a session, its polls
        and its WebSocket upgrade, to the worker that holds the session
        (the appliance's nginx, templates/nginx.conf.in). python-socketio
        makes its own socket ids with this method too, so they name the
        worker as well. A forged prefix buys nothing: the random part
        still has to match a session of that worker.
        """
        return self.sid_prefix + str(super().generate_id())

    def disconnect(self, sid: str | None = None) -> None:
        """Close the session *sid*, or every session, without waiting.

        python-engineio waits until the client has read the close packet.
        It calls this method when a request brings a packet it cannot
        handle (e.g. of an unknown type), from that request's greenlet: a
        polling client that does not poll again would hold that greenlet,
        and its connection, until the server stops. The client learns of
        the end anyway: the request is answered ``400``, and so is the next.
        """
        if sid is not None and sid in self.sockets:
            logger.warning("Closing session %s: invalid Engine.IO request", sid)
        sids = list(self.sockets) if sid is None else [sid]
        for key in sids:
            session = self.sockets.get(key)
            if session is not None:
                session.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
                self.sockets.pop(key, None)

    def _log_error_once(self, message: str, message_key: str) -> None:
        """Log a refused request (bad session, version, transport …): a
        warning, each time, where python-engineio logs an ERROR the first
        time and INFO after. It is the client's fault, and the log rate
        limit (:mod:`oe_web_socketio.logs`) bounds the lines."""
        self.logger.warning(message)

    #: The attribute of a session set while one of its polls is held.
    POLLING = "oe_web_socketio_polling"

    def handle_request(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """python-engineio's entry point, which refuses with a ``4xx`` and
        one log line what python-engineio 4.15.1 answers ``500`` or ``200``
        with a traceback, on a polling session:

        * a request for a session that has ended (python-engineio: ``500``,
          ``KeyError: 'Session is disconnected'``): ``400``;
        * a ``POST`` whose body is not a payload python-engineio can decode
          (not UTF-8, an empty packet, a type that is not a digit, JSON
          nested too deep, too many packets, a JSONP body without ``d``;
          python-engineio: ``200`` and a traceback) or holds a packet no
          client sends (see :func:`~.protocol.decode_engineio_payload`):
          ``400``, and the session is closed;
        * a ``POST`` over ``max_http_buffer_size``: ``413`` (python-engineio:
          ``400``), the session is closed;
        * a second ``GET`` while one is held (python-engineio holds both,
          each then gets part of the packets): ``400``, and the session is
          closed, as the reference server does ("overlap from client").

        Each is worth reporting to python-engineio (its ``Socket.receive``
        and ``Payload.decode`` have no error handling of their own).

        The two requests of every polling delivery, a ``GET`` of an open
        session and a ``POST`` of its packets, without JSONP nor an
        ``Origin`` (a plain poll, :meth:`_plain_poll`), are answered here
        (:meth:`_poll`, :meth:`_receive`) as python-engineio would: its
        checks of the query, done above once, and its second decoding of a
        ``POST`` (:meth:`_read_payload` decoded it already) are skipped.
        Others go to python-engineio.
        """
        query = parse_query(environ.get("QUERY_STRING", ""))
        sid = query.get("sid", [""])[0]
        plain = self._plain_poll(environ, query)
        # No local dict: this frame lasts as long as a WebSocket does.
        del query
        session = self.sockets.get(sid) if sid else None
        method = environ.get("REQUEST_METHOD")
        if session is None or method not in ("GET", "POST"):
            return super().handle_request(environ, start_response)
        if session.closed:
            self.sockets.pop(sid, None)
            return self._refuse(environ, start_response, 400, "Session is disconnected")
        if is_websocket_request(environ) or not session.connected or session.upgraded:
            return super().handle_request(environ, start_response)
        if method == "POST":
            packets = self._read_payload(environ, session)
            if isinstance(packets, tuple):
                return self._refuse(environ, start_response, *packets)
            if plain:
                return self._receive(environ, start_response, session, packets)
            return super().handle_request(environ, start_response)
        if getattr(session, self.POLLING, False):
            self._close(session, "a poll while another one is held")
            return self._refuse(environ, start_response, 400, "Overlapping poll")
        setattr(session, self.POLLING, True)
        try:
            if plain:
                return self._poll(environ, start_response, session)
            return super().handle_request(environ, start_response)
        finally:
            setattr(session, self.POLLING, False)

    def _plain_poll(self, environ: dict[str, Any], query: dict[str, list[str]]) -> bool:
        """Whether a request of an open polling session needs nothing of
        python-engineio's ``handle_request`` but its answer: the polling
        transport (allowed), no JSONP index, no ``Origin`` to check nor
        CORS preflight header to answer."""
        return (
            query.get("transport", ["polling"])[0] == "polling"
            and "polling" in self.transports
            and "j" not in query
            and "HTTP_ORIGIN" not in environ
            and "HTTP_ACCESS_CONTROL_REQUEST_HEADERS" not in environ
        )

    def _poll(
        self, environ: dict[str, Any], start_response: Callable[..., Any], session: Any
    ) -> Iterable[bytes]:
        """Answer a plain ``GET`` of *session* with the packets queued for
        it, waiting for one (python-engineio's ``Socket.handle_get_request``);
        as python-engineio, a poll that waited past the ping timeout
        closes the session and is answered ``400``."""
        try:
            packets = session.handle_get_request(environ, start_response)
        except engineio.exceptions.EngineIOError:
            if session.sid in self.sockets:
                self.disconnect(session.sid)
            return self._refuse(environ, start_response, 400, "Bad Request")
        if session.closed:
            self.sockets.pop(session.sid, None)
        if not isinstance(packets, list):  # an upgrade's answer
            return packets  # type: ignore[no-any-return]
        body = eio_payload.Payload(packets=packets).encode().encode("utf-8")
        return self._answer(
            environ,
            start_response,
            [("Content-Type", "text/plain; charset=UTF-8")],
            body,
        )

    def _receive(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        session: Any,
        packets: list[eio_packet.Packet],
    ) -> Iterable[bytes]:
        """Hand the *packets* of a plain ``POST`` to *session*, as
        python-engineio's ``Socket.handle_post_request`` does once it has
        decoded them, and answer ``OK``."""
        try:
            for pkt in packets:
                session.receive(pkt)
        except engineio.exceptions.EngineIOError:
            if session.sid in self.sockets:
                self.disconnect(session.sid)
            return self._refuse(environ, start_response, 400, "Bad Request")
        return self._answer(
            environ, start_response, [("Content-Type", "text/plain")], b"OK"
        )

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> list[bytes]:
        """Answer a plain poll (:meth:`_plain_poll`) ``200`` with *body*,
        compressed as python-engineio would (``http_compression``: the
        first of the client's accepted encodings it knows, for a body of
        ``compression_threshold`` bytes or more), with its CORS headers."""
        if self.http_compression and len(body) >= self.compression_threshold:
            accepted = environ.get("HTTP_ACCEPT_ENCODING", "").split(",")
            for coding in (item.partition(";")[0].strip() for item in accepted):
                if coding in self.compression_methods:
                    body = getattr(self, f"_{coding}")(body)
                    headers.append(("Content-Encoding", coding))
                    break
        # python-engineio's _cors_headers of a request without Origin nor
        # Access-Control-Request-Headers (a plain poll), without asking
        # its allowed origins (a list built per request) first.
        if self.cors_allowed_origins != [] and self.cors_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        start_response("200 OK", headers)
        return [body]

    def _read_payload(
        self, environ: dict[str, Any], session: Any
    ) -> list[eio_packet.Packet] | tuple[int, str]:
        """Read, check and decode the body of a ``POST``: its packets
        (python-engineio may read the body again, from memory), or the
        status and message of the refusal (the session is closed)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self._close(session, "invalid Content-Length")
            return 400, "Invalid Content-Length"
        if length > self.max_http_buffer_size:
            message = f"Payload over {self.max_http_buffer_size} bytes"
            self._close(session, message)
            return 413, message
        try:
            body = environ["wsgi.input"].read(length)
        except OSError as exc:  # fewer bytes than Content-Length says
            self._close(session, f"incomplete body: {exc}")
            return 400, "Incomplete body"
        try:
            packets = decode_engineio_payload(body)
        except EngineIOPacketError as exc:
            self._close(session, str(exc))
            return 400, str(exc)
        environ["wsgi.input"] = io.BytesIO(body)
        return packets

    def _close(self, session: Any, reason: str) -> None:
        logger.warning(
            "Closing session %s from %s: %s", session.sid, logs.CLIENT.get(), reason
        )
        close_session(session, CLOSE_POLICY_VIOLATION, reason)

    def _refuse(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        status: int,
        message: str,
    ) -> list[bytes]:
        """Answer *status* with *message* (a JSON string, as
        python-engineio's refusals)."""
        answer = self._bad_request(message)
        if status == 413:
            answer["status"] = "413 PAYLOAD TOO LARGE"
        headers = answer["headers"] + self._cors_headers(environ)
        start_response(answer["status"], headers)
        return [answer["response"]]


def name_worker(eio: EngineIOServer, worker: str) -> None:
    """Make *eio*'s session ids start with ``<worker>.`` (nothing when
    *worker* is empty): see :meth:`EngineIOServer.generate_id`."""
    eio.sid_prefix = f"{worker}." if worker else ""


class Server(socketio.Server):
    """python-socketio's server, which ends the session of a client that
    sends a packet it cannot decode, and runs on :class:`EngineIOServer`.

    python-socketio raises :class:`ValueError` from its Engine.IO message
    handler for such a packet; python-engineio then logs a traceback and
    keeps the session, and the client learns nothing. Here the server logs
    one line and closes the Engine.IO session, as the reference Socket.IO
    server does; the client sees a disconnection. (An ``EVENT`` packet
    whose header is readable is answered instead, see
    :mod:`oe_web_socketio.protocol`.)

    Both changes override internal methods of python-socketio 5
    (``_engineio_server_class``, the hook its asyncio server overrides
    too, and ``_handle_eio_message``): versions.cfg pins it, and
    tests/test_protocol.py fails if they stop being called.

    It also counts the emits of this process by namespace
    (:attr:`emitted`, for ``/metrics``): one per call, whatever the number
    of recipients, so that a fan-out costs one count.

    :param trusted_proxies: whose ``X-Forwarded-For`` names the client in
        that line.
    """

    def __init__(self, *, trusted_proxies: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trusted_proxies = trusted_proxies
        self.eio.describe_client = self._describe_client
        #: Calls of :meth:`emit`, by namespace.
        self.emitted: collections.Counter[str] = collections.Counter()

    def emit(
        self,
        event: str,
        data: Any = None,
        to: Any = None,
        room: Any = None,
        skip_sid: Any = None,
        namespace: str | None = None,
        callback: Callable[..., Any] | None = None,
        ignore_queue: bool = False,
    ) -> None:
        self.emitted[namespace or "/"] += 1
        super().emit(
            event,
            data,
            to=to,
            room=room,
            skip_sid=skip_sid,
            namespace=namespace,
            callback=callback,
            ignore_queue=ignore_queue,
        )

    def _engineio_server_class(self) -> type[engineio.Server]:
        return EngineIOServer

    def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        if eio_sid not in self.environ:
            # The session has ended: python-engineio handles each message
            # in a greenlet of its own, which may run after the end (the
            # client sent more after a close packet, or after garbage).
            # python-socketio would raise KeyError or TypeError.
            logger.debug("Message after the end of session %s dropped", eio_sid)
            return
        try:
            super()._handle_eio_message(eio_sid, data)
        except ValueError as exc:
            self._close_session(
                eio_sid,
                f"malformed packet: {exc}",
                getattr(exc, "close_code", CLOSE_POLICY_VIOLATION),
            )

    def _describe_client(self, eio_sid: str) -> str:
        """``<sid> from <address>``, for log lines about a session."""
        environ = self.environ.get(eio_sid, {})
        return f"{eio_sid} from {auth.client_address(environ, self.trusted_proxies)}"

    def _close_session(
        self, eio_sid: str, reason: str, code: int = CLOSE_POLICY_VIOLATION
    ) -> None:
        address = auth.client_address(
            self.environ.get(eio_sid, {}), self.trusted_proxies
        )
        logger.warning(
            "Closing session %s from %s: %s",
            eio_sid,
            address,
            reason,
            extra={"client": address},  # logs.RateLimit's key
        )
        session = self.eio.sockets.get(eio_sid)
        if session is not None:
            # Not eio.disconnect(), which would log a second line.
            close_session(session, code, reason)


class SocketIO:
    """The namespaces of a Socket.IO :class:`Server`.

    :param server: the server to register namespaces on; it must accept
        every path (``namespaces="*"``) and use
        :class:`~oe_web_socketio.protocol.Packet`
        (see :func:`oe_web_socketio.app.socketio_options`).
    :param settings: what the dispatchers need of the configuration.
    :param directory: where the sockets are found (the broker's); each
        dispatcher registered is added to it. ``None``: one of its own.
    """

    def __init__(
        self,
        server: socketio.Server,
        settings: DispatchSettings,
        directory: SocketDirectory | None = None,
    ) -> None:
        self.server = server
        self.settings = settings
        self.directory = directory if directory is not None else SocketDirectory()
        self._registrations: dict[str, Registration] = {}
        #: Refuses the paths nobody serves, and counts them.
        self.unknown = UnknownNamespace(settings.trusted_proxies)
        server.register_namespace(self.unknown)

    @property
    def namespaces(self) -> Mapping[str, type[Namespace]]:
        """The class registered at each path."""
        return {path: r.namespace_class for path, r in self._registrations.items()}

    @property
    def dispatchers(self) -> Mapping[str, Dispatcher]:
        """The dispatcher serving each path (a read-only view)."""
        return self.directory.dispatchers

    def dispatcher(self, path: str) -> Dispatcher:
        """The dispatcher serving *path*.

        :raises KeyError: no namespace is registered at *path*.
        """
        dispatcher: Dispatcher = self.directory.dispatchers[path]
        return dispatcher

    def add_namespace(
        self,
        path: str | None,
        namespace_class: type[Namespace],
        *,
        origin: str = "code",
    ) -> Dispatcher:
        """Serve *namespace_class* at *path*.

        :param path: ``/chat``; ``None`` for the class's own ``path``.
        :param origin: where the registration comes from, for messages.
        :raises NamespaceError: the path or the class is invalid.
        :raises DuplicateNamespaceError: *path* is taken.
        """
        if not (
            isinstance(namespace_class, type) and issubclass(namespace_class, Namespace)
        ):
            raise NamespaceError(
                f"{namespace_class!r} ({origin}) is not a subclass of "
                "oe_web_socketio.Namespace"
            )
        if path is None:
            path = namespace_class.path
        if not isinstance(path, str) or not PATH.fullmatch(path):
            raise NamespaceError(
                f"invalid namespace path {path!r} for {namespace_class.__qualname__} "
                f"({origin}): it must start with '/' and have no space, ',', '?', "
                "'#' or '*'"
            )
        registration = Registration(path, namespace_class, origin)
        existing = self._registrations.get(path)
        if existing is not None:
            raise DuplicateNamespaceError(existing, registration)
        dispatcher = Dispatcher(path, namespace_class, self.settings)
        self.server.register_namespace(dispatcher)
        self._registrations[path] = registration
        self.directory.add(path, dispatcher)
        logger.info("Add namespace: %r -> %s", path, registration)
        return dispatcher

    def add_namespace_spec(self, spec: str, *, origin: str) -> Dispatcher:
        """Register the namespace a ``PATH=module:Class`` *spec* names.

        :raises NamespaceError: *spec* is invalid or its class cannot be
            imported.
        """
        path, sep, target = spec.partition("=")
        if not sep:
            raise NamespaceError(f"{spec!r} ({origin}) is not PATH=module:Class")
        namespace_class = import_object(target.strip(), origin=origin)
        return self.add_namespace(path.strip(), namespace_class, origin=origin)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the namespaces of the entry point *group*; return
        their paths.

        :raises NamespaceError: an entry point cannot be loaded, or its
            path is invalid or taken.
        """
        paths = []
        for entry_point in sorted(metadata.entry_points(group=group)):
            dist = entry_point.dist.name if entry_point.dist is not None else "?"
            origin = f"entry point {entry_point.name} = {entry_point.value} in {dist}"
            try:
                namespace_class = entry_point.load()
            except Exception as exc:
                raise NamespaceError(f"cannot load {origin}: {exc}") from exc
            path = getattr(namespace_class, "path", None)
            if path is None:
                path = "/" + entry_point.name.lstrip("/")
            self.add_namespace(path, namespace_class, origin=origin)
            paths.append(path)
        return paths

    def count_greenlets(self) -> int:
        """Greenlets alive owned by sockets: spawned, and handlers running."""
        dispatchers = list(self.directory.dispatchers.values())
        return sum(d.greenlet_count for d in dispatchers)


def import_object(target: str, *, origin: str) -> Any:
    """The object *target* (``package.module:Name``, ``Name`` may be
    dotted) names.

    :raises NamespaceError: it cannot be imported.
    """
    module_name, sep, qualname = target.partition(":")
    if not (sep and module_name and qualname):
        raise NamespaceError(f"{target!r} ({origin}) is not module:Class")
    try:
        value: Any = importlib.import_module(module_name)
        for name in qualname.split("."):
            value = getattr(value, name)
    except (ImportError, AttributeError) as exc:
        raise NamespaceError(f"cannot import {target} ({origin}): {exc}") from exc
    return value
