"""The bridge between python-socketio and per-socket namespaces.

python-socketio's class-based namespaces are one object for every client
of a path; this project's :class:`~oe_web_socketio.namespace.Namespace` is
one object per socket. A :class:`Dispatcher` is the python-socketio
namespace registered at a path: it creates an instance of the namespace
class when a socket connects, routes each event of that socket to it, and
drops it when the socket disconnects.

The path of an event, in this order, stopping at the first refusal:

1. malformed packet (see :mod:`~oe_web_socketio.protocol`),
2. payload over ``max_event_size`` bytes,
3. event outside the ACL, or reserved (``connect``, ``disconnect``),
4. no ``on_<event>`` method,
5. arguments that do not fit the method's signature,
6. the method raises: :class:`~oe_web_socketio.protocol.EventError` and
   :class:`~oe_web_socketio.exceptions.AuthenticationError` are the
   client's fault; :class:`~oe_web_socketio.exceptions.DatabaseUnavailable`
   is answered "try again later"; anything else is an internal fault.

Each refusal is one log line and one answer to that client alone (see
:mod:`~oe_web_socketio.protocol`); an internal fault also logs its
traceback and runs the ``on_error`` hooks. The socket stays connected and
no other socket is affected. Nothing raised by a namespace escapes to
python-socketio, but :class:`ConnectionRefusedError` at connection time.

Events run in greenlets of their own (python-socketio's ``async_handlers``,
which this module requires); the dispatcher counts them as greenlets of
the socket, so that the socket's disconnection kills those still running.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import gevent
import socketio
from socketio import exceptions as sio_exceptions

from oe_web_socketio import auth, pubsub
from oe_web_socketio.exceptions import (
    AuthenticationError,
    DatabaseUnavailable,
    EventError,
    HostError,
)
from oe_web_socketio.hosts import Host, SessionHost
from oe_web_socketio.namespace import Namespace, Request, shorten
from oe_web_socketio.protocol import (
    AUTHENTICATION_FAILED,
    BAD_REQUEST,
    FORBIDDEN,
    INTERNAL_ERROR,
    MALFORMED,
    PAYLOAD_TOO_LARGE,
    RESERVED_EVENTS,
    UNAVAILABLE,
    UNKNOWN_EVENT,
    UNKNOWN_NAMESPACE,
    IncomingEvent,
    error_payload,
)

if TYPE_CHECKING:
    from oe_web_socketio.pubsub import Broker
    from oe_web_socketio.pubsub.presence import Presence

logger = logging.getLogger(__name__)

#: One line per event received, in :attr:`DispatchSettings.message_log_format`.
message_logger = logging.getLogger("oe_web_socketio.messages")


#: What a client is told when a database cannot serve it.
UNAVAILABLE_MESSAGE = "service unavailable, try again later"


class DispatchSettings:
    """What a :class:`Dispatcher` needs of the configuration.

    :param authenticator: without *host*, the validator of the sessions
        clients present (a :class:`~oe_web_socketio.hosts.SessionHost` with
        it is the host); ``None``: sessions are refused.
    :param trusted_proxies: see :attr:`oe_web_socketio.config.Config.trusted_proxies`.
    :param max_event_size: largest event accepted, in bytes of its packet.
    :param message_log_format: ``%``-format of the line logged per event
        received (fields :data:`oe_web_socketio.config.MESSAGE_LOG_FIELDS`),
        or ``None``.
    :param broker: what delivers the database's messages, given to every
        socket (:mod:`oe_web_socketio.pubsub`); by default nothing does.
    :param presence: where the namespaces that keep presence keep it
        (:mod:`oe_web_socketio.pubsub.presence`); ``None``: nowhere.
    :param host: the host application, which authenticates clients unless
        a namespace class has its own authenticator (see
        :meth:`~oe_web_socketio.namespace.Namespace.identify`).

    :ivar host: the one that authenticates clients: *host*, or a session
        host of *authenticator*.
    """

    def __init__(
        self,
        *,
        authenticator: auth.Authenticator | None = None,
        trusted_proxies: tuple[str, ...] = (),
        max_event_size: int = 65_536,
        message_log_format: str | None = None,
        broker: Broker = pubsub.NULL,
        host: Host | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.broker = broker
        self.presence = presence
        self.host: Host = host if host is not None else SessionHost(authenticator)
        #: The read-only cursors of the server's host, lent to its sockets
        #: (:meth:`Namespace.cursor <oe_web_socketio.namespace.Namespace.cursor>`).
        self.pools = self.host.pools
        self.trusted_proxies = trusted_proxies
        self.max_event_size = max_event_size
        self.message_log_format = message_log_format


#: An event's handler, its signature, and the fewest and most positional
#: arguments it takes (see :func:`positional_arity`).
_Handler = tuple[Callable[..., Any], inspect.Signature, float, float]


def positional_arity(signature: inspect.Signature) -> tuple[float, float]:
    """The fewest and most positional arguments that *signature* binds
    when no keyword is given (``inf``: any number). A call within them
    binds; one outside fails :meth:`~inspect.Signature.bind`. A required
    keyword-only parameter binds no call: ``(inf, inf)``."""
    fewest = most = 0.0
    for parameter in signature.parameters.values():
        kind = parameter.kind
        if kind is parameter.VAR_POSITIONAL:
            most = float("inf")
        elif kind is parameter.VAR_KEYWORD:
            continue
        elif kind is parameter.KEYWORD_ONLY:
            if parameter.default is parameter.empty:
                return float("inf"), float("inf")
        else:
            most += 1
            if parameter.default is parameter.empty:
                fewest += 1
    return fewest, most


class Dispatcher(socketio.Namespace):
    """The python-socketio namespace serving *namespace_class* at *path*.

    :ivar sockets: the instance of each connected socket, by sid.
    """

    def __init__(
        self, path: str, namespace_class: type[Namespace], settings: DispatchSettings
    ) -> None:
        super().__init__(path)
        self.namespace_class = namespace_class
        self.settings = settings
        #: Who authenticates the clients of this path: the server's host,
        #: or sessions checked by the class's own authenticator.
        self.host: Host = (
            settings.host
            if namespace_class.authenticator is None
            else SessionHost(
                namespace_class.authenticator,
                # The cookie of the server's sessions, if it has any.
                session_cookie=settings.host.session_cookie
                if isinstance(settings.host, SessionHost)
                else None,
            )
        )
        self.sockets: dict[str, Namespace] = {}
        #: Handler, signature and arity of each event name, found once.
        self._handlers: dict[str, _Handler] = {}
        #: Events received from the clients of the path (``/metrics``).
        self.received = 0
        #: Connections and events refused, and events answered with an
        #: error, by code (``/metrics``): the one count of each.
        self.refused: Counter[str] = Counter()

    def __repr__(self) -> str:
        cls = self.namespace_class
        return f"<Dispatcher {self.namespace} {cls.__module__}.{cls.__qualname__}>"

    def trigger_event(self, event: str, *args: Any) -> Any:
        """Called by python-socketio for every event of the path."""
        if isinstance(event, IncomingEvent) or event not in RESERVED_EVENTS:
            return self._handle_event(event, *args)
        if event == "connect":
            return self._connect(*args)
        self._disconnect(*args)
        return None

    @property
    def greenlet_count(self) -> int:
        """Greenlets alive owned by the sockets of this path."""
        return sum(socket.greenlet_count for socket in list(self.sockets.values()))

    # --- connection

    def _connect(
        self, sid: str, environ: Mapping[str, Any], auth_payload: Any = None
    ) -> bool:
        request = Request(
            environ, auth.client_address(environ, self.settings.trusted_proxies)
        )
        try:
            socket = self.namespace_class(
                self.server,
                self.namespace,
                sid,
                request,
                broker=self.settings.broker,
                host=self.host,
                pools=self.settings.pools,
                presence=self.settings.presence,
            )
        except Exception:
            logger.exception(
                "Error creating %s for %s", self.namespace_class, request.address
            )
            self.refused[INTERNAL_ERROR] += 1
            raise sio_exceptions.ConnectionRefusedError(
                "internal server error", {"code": INTERNAL_ERROR}
            ) from None
        refusal = self._authenticate(socket, environ, auth_payload)
        if refusal is not None:
            code, reason = refusal
            self.refused[code] += 1
            logger.warning(
                "Refused connection to %s from %s: %s",
                self.namespace,
                request.address,
                reason,
                extra={"client": request.address},  # logs.RateLimit's key
            )
            raise sio_exceptions.ConnectionRefusedError(reason, {"code": code})
        self.sockets[sid] = socket
        try:
            socket.attach()
            socket.on_connect()
            socket.events.on_connect.send(request, socket, socket.context)
            socket.enter_presence()
        except (sio_exceptions.ConnectionRefusedError, ConnectionRefusedError) as exc:
            self._drop(socket)
            self.refused[refusal_code(exc)] += 1
            reason = getattr(exc, "error_args", {}).get("message", exc)
            logger.warning(
                "Refused %r from %s: %s",
                socket,
                request.address,
                reason,
                extra={"client": request.address},
            )
            raise
        except Exception as exc:  # noqa: BLE001 - the namespace's fault, logged
            socket.report_error(exc, "connection")
            self._drop(socket)
            self.refused[INTERNAL_ERROR] += 1
            raise sio_exceptions.ConnectionRefusedError(
                "internal server error", {"code": INTERNAL_ERROR}
            ) from None
        logger.debug("Connected %r from %s", socket, request.address)
        return True

    def _authenticate(
        self, socket: Namespace, environ: Mapping[str, Any], auth_payload: Any
    ) -> tuple[str, str] | None:
        """Authenticate *socket* with the credentials it presents, if any;
        return ``(code, reason)`` if it must be refused."""
        try:
            identity = socket.identify(environ, auth_payload)
            if identity is not None:
                socket.authenticate(identity)
        except AuthenticationError as exc:
            return AUTHENTICATION_FAILED, str(exc)
        except DatabaseUnavailable as exc:
            logger.error("Cannot authenticate %r: %s", socket, exc)
            return UNAVAILABLE, UNAVAILABLE_MESSAGE
        except HostError as exc:  # the host application's fault, logged
            return INTERNAL_ERROR, str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. the database, logged
            socket.report_error(exc, "authentication")
            return INTERNAL_ERROR, "internal server error"
        if socket.identity is None and not socket.allow_anonymous:
            return AUTHENTICATION_FAILED, "authentication required"
        return None

    def _drop(self, socket: Namespace) -> None:
        """Forget a socket that will not connect; kill its greenlets."""
        socket.connected = False
        self.sockets.pop(socket.sid, None)
        socket.detach()
        socket.kill_local_jobs()

    def _disconnect(self, sid: str, reason: str = "") -> None:
        """Tear a socket down, as django-socketio did: ``on_disconnect``,
        ``on_unsubscribe`` for each channel, then ``on_finish``. Its
        greenlets are killed first; a failing hook does not stop the
        others."""
        socket = self.sockets.get(sid)
        if socket is None:
            return
        socket.connected = False
        socket.detach()
        try:
            socket.kill_local_jobs()
            self._run_hook(socket, "leaving presence", socket.leave_presence)
            hooks = socket.events
            args = (socket.request, socket, socket.context)
            self._run_hook(socket, "on_disconnect", socket.on_disconnect, reason)
            self._run_hook(
                socket, "on_disconnect hooks", hooks.on_disconnect.send, *args
            )
            for channel in socket.channels:
                self._run_hook(
                    socket,
                    "on_unsubscribe hooks",
                    hooks.on_unsubscribe.send,
                    *args,
                    channel,
                    channels=(channel,),
                )
            self._run_hook(socket, "on_finish hooks", hooks.on_finish.send, *args)
            # A hook may have spawned, against the rules: kill that too.
            socket.kill_local_jobs()
        finally:
            del self.sockets[sid]
        logger.debug("Disconnected %r (%s)", socket, reason)

    @staticmethod
    def _run_hook(
        socket: Namespace,
        during: str,
        hook: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        try:
            hook(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - logged, the others run
            socket.report_error(exc, during)

    # --- events

    def _handle_event(self, event: str, sid: str, *args: Any) -> Any:
        socket = self.sockets.get(sid)
        if socket is None or not socket.connected:
            # python-socketio checked it, but this greenlet started later.
            return None
        self.received += 1
        size: int | None = getattr(event, "size", None)
        if self.settings.message_log_format is not None:
            self._log_message(socket, event, size)
        error = getattr(event, "error", None)
        if error is not None:
            return self._refuse(socket, event, MALFORMED, f"malformed event: {error}")
        if size is not None and size > self.settings.max_event_size:
            return self._refuse(
                socket,
                event,
                PAYLOAD_TOO_LARGE,
                f"event of {size} bytes, the limit is {self.settings.max_event_size}",
            )
        if event in RESERVED_EVENTS or not socket.is_event_allowed(event):
            return self._refuse(
                socket, event, FORBIDDEN, f"event {shorten(str(event))} is not allowed"
            )
        found = self._find_handler(event)
        if found is None:
            return self._refuse(
                socket, event, UNKNOWN_EVENT, f"unknown event {shorten(str(event))}"
            )
        handler, signature, fewest, most = found
        if not fewest <= len(args) + 1 <= most:
            try:  # bind() says what is wrong, in its words
                signature.bind(socket, *args)
            except TypeError as exc:
                return self._refuse(
                    socket,
                    event,
                    BAD_REQUEST,
                    f"wrong arguments for event {shorten(str(event))}: {exc}",
                )
        current = gevent.getcurrent()
        socket.own_greenlet(current)
        try:
            return handler(socket, *args)
        except EventError as exc:
            return self._refuse(socket, event, exc.code, exc.message)
        except AuthenticationError as exc:
            return self._refuse(socket, event, AUTHENTICATION_FAILED, str(exc))
        except HostError as exc:  # the host application's fault, logged
            return self._answer(socket, event, error_payload(INTERNAL_ERROR, str(exc)))
        except DatabaseUnavailable as exc:
            logger.error(
                "Cannot serve event %s of %r: %s", shorten(str(event)), socket, exc
            )
            return self._answer(
                socket, event, error_payload(UNAVAILABLE, UNAVAILABLE_MESSAGE)
            )
        except Exception as exc:  # noqa: BLE001 - logged, answered
            socket.report_error(exc, f"event {shorten(str(event))}")
            return self._answer(
                socket, event, error_payload(INTERNAL_ERROR, "internal server error")
            )
        finally:
            socket.disown_greenlet(current)

    def _find_handler(self, event: str) -> _Handler | None:
        found = self._handlers.get(event)
        if found is None:
            handler = getattr(self.namespace_class, "on_" + event, None)
            if not callable(handler):
                return None
            signature = inspect.signature(handler)
            # Cached only for methods that exist: the names are bounded.
            found = self._handlers[str(event)] = (
                handler,
                signature,
                *positional_arity(signature),
            )
        return found

    def _refuse(self, socket: Namespace, event: str, code: str, message: str) -> Any:
        logger.warning(
            "Refused event %s of %r from %s: %s",
            shorten(str(event)),
            socket,
            socket.request.address,
            message,
            extra={"client": socket.request.address},
        )
        return self._answer(socket, event, error_payload(code, message))

    def _answer(self, socket: Namespace, event: str, payload: Any) -> Any:
        """Return *payload* as the acknowledgement, or, when the client
        asked for none, send it as an ``error`` event; count its code."""
        self.refused[payload["error"]["code"]] += 1
        if getattr(event, "ack", True):
            return payload
        socket.error(payload["error"]["code"], payload["error"]["message"])
        return None

    def _log_message(self, socket: Namespace, event: str, size: int | None) -> None:
        if not message_logger.isEnabledFor(logging.INFO):
            return
        message_logger.info(
            self.settings.message_log_format,
            {
                "address": socket.request.address or "-",
                "namespace": self.namespace,
                "sid": socket.sid,
                "uid": socket.uid if socket.uid is not None else "-",
                "login": socket.login or "-",
                "db": socket.db or "-",
                "event": event[:64] or "-",
                "size": size if size is not None else "-",
            },
        )


class UnknownNamespace(socketio.Namespace):
    """Refuses, with a clear reason and a log line, a connection to a path
    no namespace is registered at (the server accepts every path, ``'*'``,
    so that this catch-all sees them)."""

    def __init__(self, trusted_proxies: tuple[str, ...] = ()) -> None:
        super().__init__("*")
        self.trusted_proxies = trusted_proxies
        #: Connections refused (``/metrics``).
        self.refused = 0

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event == "connect" and not isinstance(event, IncomingEvent):
            path, _sid, environ = args[:3]
            address = auth.client_address(environ, self.trusted_proxies)
            self.refused += 1
            logger.warning(
                "Refused connection from %s to unknown namespace %s",
                address,
                shorten(path),
                extra={"client": address},
            )
            raise sio_exceptions.ConnectionRefusedError(
                f"unknown namespace {shorten(path)}", {"code": UNKNOWN_NAMESPACE}
            )
        return None


def refusal_code(exc: BaseException) -> str:
    """The code a :class:`ConnectionRefusedError` a namespace raised tells
    the client (its ``data``'s ``code``), or :data:`FORBIDDEN`."""
    data = getattr(exc, "error_args", {}).get("data")
    code = data.get("code") if isinstance(data, Mapping) else None
    return code if isinstance(code, str) else FORBIDDEN
