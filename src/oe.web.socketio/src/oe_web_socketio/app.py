"""The composition root: the WSGI application of the server, built of its
parts.

:class:`Application` owns the Socket.IO server and the router of plain HTTP
routes, and dispatches between them: paths under ``/socket.io/`` go to
Socket.IO, every other path to the router. It holds no logic of its own:
its constructor builds each part once, complete, from the configuration,
the host's contributions and the parts built before it (:func:`engine`,
:func:`broker`, :func:`sockets`, :func:`session_watch`, the long-polling
endpoints, the router), and changes none of them afterwards. Later parts
plug in through the public registries (namespaces with
``application.socketio``, routes with ``application.router.add``).

Socket.IO runs in python-engineio's ``gevent`` async mode: its background
tasks are greenlets and its WebSocket transport is
:class:`~oe_web_socketio.websocket.WebSocketTransport` (see
:mod:`oe_web_socketio.websocket`). The namespaces served are, in this order,
those of the entry point group ``oe_web_socketio.namespaces``, those of
:attr:`Config.namespaces`, and at ``/``, unless one of them took it, the
base :class:`~oe_web_socketio.namespace.Namespace` (authentication and
channels). A connection to any other path is refused.

What differs per host application (authentication, database, models)
comes from one :class:`~oe_web_socketio.hosts.Host`: Tryton's
(:class:`~oe_web_socketio.hosts.tryton.TrytonHost`, built by the command
line) or a plain WSGI application's
(:class:`~oe_web_socketio.hosts.wsgi.WSGIHost`, see
:mod:`oe_web_socketio.wsgi`). This module imports neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import socketio
from prometheus_client import Histogram

from oe_web_socketio import __version__, logs, metrics, pubsub
from oe_web_socketio.admin import AdminView, server_id
from oe_web_socketio.auth import AllowedOrigins, client_address
from oe_web_socketio.config import Config
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.dispatcher import DispatchSettings
from oe_web_socketio.health import health_route
from oe_web_socketio.hosts import Host
from oe_web_socketio.limits import set_limits
from oe_web_socketio.longpolling import add_routes, longpolling_endpoints
from oe_web_socketio.namespace import Namespace
from oe_web_socketio.protocol import Packet
from oe_web_socketio.pubsub.cluster import Membership
from oe_web_socketio.pubsub.fanout import client_manager, manager_state, stop_manager
from oe_web_socketio.pubsub.local import LocalBroker
from oe_web_socketio.pubsub.postgres import OutboxBroker
from oe_web_socketio.pubsub.presence import DatabasePresence, LocalPresence, Presence
from oe_web_socketio.routing import Router, method_not_allowed, send
from oe_web_socketio.sessions import SessionWatch
from oe_web_socketio.sockets import Server, SocketIO, name_worker
from oe_web_socketio.static import static_route
from oe_web_socketio.websocket import going_away, use_websocket_transport

logger = logging.getLogger(__name__)

#: Where Socket.IO is mounted (the client's ``path`` option, ``/socket.io/``).
SOCKETIO_PATH = "socket.io"

#: The methods Engine.IO answers there (``OPTIONS``: CORS preflights);
#: any other is ``405`` with ``Allow``.
SOCKETIO_METHODS = frozenset({"GET", "OPTIONS", "POST"})

#: Loggers given to python-socketio and python-engineio. Given a boolean
#: instead, they would add a handler of their own to their default logger
#: and every record would be printed twice.
SOCKETIO_LOGGER = logging.getLogger("oe_web_socketio.socketio")
ENGINEIO_LOGGER = logging.getLogger("oe_web_socketio.engineio")


def socketio_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of :class:`~oe_web_socketio.sockets.Server` for
    *config*.

    Every path is accepted at the protocol level (``namespaces="*"``) so
    that a path nobody serves is refused with a reason, by
    :class:`~oe_web_socketio.dispatcher.UnknownNamespace`. Events run in
    greenlets of their own (``async_handlers``), which the dispatcher
    relies on to kill those of a socket when it disconnects.
    """
    return {
        "async_mode": "gevent",
        "async_handlers": True,
        "namespaces": "*",
        "serializer": Packet,
        "trusted_proxies": config.trusted_proxies,
        "ping_interval": config.ping_interval,
        "ping_timeout": config.ping_timeout,
        "max_http_buffer_size": config.max_http_buffer_size,
        "cors_allowed_origins": cors_allowed_origins(config.cors_allowed_origins),
        "logger": SOCKETIO_LOGGER,
        "engineio_logger": ENGINEIO_LOGGER,
    }


def cors_allowed_origins(origins: tuple[str, ...]) -> str | AllowedOrigins | None:
    """Translate :attr:`Config.cors_allowed_origins` for python-engineio.

    python-engineio reads ``None`` as "same origin only" (the origin must
    match ``Host``, or ``X-Forwarded-Proto``/``X-Forwarded-Host``), ``"*"``
    as "any origin", a list as "these origins" (not the server's own), a
    callable as "those it accepts", and the empty list as "do not check
    the ``Origin`` header at all", which this project never wants. Listed
    origins come in addition to the server's own: :class:`AllowedOrigins`.
    Whatever it allows, the session cookie is accepted from the server's
    own origin only (:func:`oe_web_socketio.auth.from_own_origin`).
    """
    if not origins:
        return None
    if origins == ("*",):
        return "*"
    return AllowedOrigins(frozenset(origins))


def fanout(config: Config, host: Host | None) -> socketio.Manager:
    """The client manager that carries emits to the other workers, of
    :attr:`Config.broker` (see :mod:`oe_web_socketio.pubsub.fanout`):
    ``postgresql`` uses the first of :attr:`Config.databases`.

    :raises ConfigError: ``postgresql`` on a host without a database.
    """
    database = None
    if host is not None and host.pools is not None:
        database = config.databases[0]
    return client_manager(
        config.broker,
        database=database,
        conninfo=host.conninfo(database) if host is not None and database else None,
        url=config.broker_url,
    )


def membership(config: Config, host: Host | None) -> Membership | None:
    """This worker among those of its first database (see
    :mod:`oe_web_socketio.pubsub.cluster`), when the host has databases."""
    if host is None or host.pools is None:
        return None
    return Membership(
        host.conninfo(config.databases[0]),
        config.broker,
        config.broker_url,
        config.port,
    )


def engine(config: Config, manager: socketio.Manager | None = None) -> Server:
    """The Socket.IO server of *config*, its WebSocket transport (which
    ends with its Engine.IO session) and its caps (bytes queued per client,
    sessions, unused handshakes) set; *manager*: its client manager
    (:func:`fanout`; ``None``: python-socketio's own, one process)."""
    options = socketio_options(config)
    if manager is not None:
        options["client_manager"] = manager
    sio = Server(**options)
    use_websocket_transport(sio.eio, compression=config.websocket_compression)
    set_limits(sio.eio, config)
    name_worker(sio.eio, config.worker)
    return sio


def broker(
    config: Config,
    host: Host | None,
    sio: Server,
    directory: SocketDirectory,
    lag: Histogram | None = None,
) -> pubsub.Broker:
    """What delivers the messages published through the database: its
    outbox, fed by the host's notification consumers, when the host has
    databases; else the in-process broker of one process
    (:mod:`oe_web_socketio.pubsub.local`), whose one database is the
    first of :attr:`Config.databases`. The outbox's broker observes its
    delivery lag in *lag* (see :func:`oe_web_socketio.metrics.lag_histogram`)."""
    if host is None or host.pools is None:
        return LocalBroker(
            sio,
            directory,
            config.databases[0] if config.databases else "oe",
            history_max_age=config.history_max_age,
            history_max_count=config.history_max_count,
        )
    return OutboxBroker(
        sio,
        directory,
        host.pools,
        host.conninfo,
        config.databases,
        consumers=host.consumers(),
        history_max_age=config.history_max_age,
        history_max_count=config.history_max_count,
        lag=lag,
    )


def presence_store(membership: Membership | None) -> Presence:
    """Where the namespaces that keep presence keep it: the shared
    database, rows keyed by this worker's id (see
    :mod:`oe_web_socketio.pubsub.presence`); without a database, this
    process's memory."""
    if membership is None:
        return LocalPresence()
    return DatabasePresence(membership.conninfo, membership.id, membership.expiry)


def sockets(
    config: Config,
    host: Host | None,
    sio: Server,
    broker: pubsub.Broker,
    directory: SocketDirectory,
    namespaces: Mapping[str, type[Namespace]] | None,
    presence: Presence | None = None,
) -> SocketIO:
    """The namespaces served on *sio*, in this order: those of the entry
    point group (unless ``load_entry_points`` is off), of
    :attr:`Config.namespaces`, of *namespaces*, and at ``/``, unless one of
    them took it, the base :class:`~oe_web_socketio.namespace.Namespace`;
    their dispatchers are added to *directory*.

    :raises NamespaceError: a namespace cannot be registered.
    """
    served = SocketIO(
        sio,
        DispatchSettings(
            trusted_proxies=config.trusted_proxies,
            max_event_size=config.max_event_size,
            message_log_format=config.message_log_format,
            broker=broker,
            host=host,
            presence=presence,
        ),
        directory,
    )
    if config.load_entry_points:
        served.load_entry_points()
    for spec in config.namespaces:
        served.add_namespace_spec(spec, origin="configuration")
    for path, namespace_class in (namespaces or {}).items():
        served.add_namespace(path, namespace_class)
    if "/" not in served.namespaces:
        served.add_namespace("/", Namespace, origin="default")
    return served


def session_watch(
    config: Config, host: Host | None, directory: SocketDirectory
) -> SessionWatch | None:
    """The check of the sessions of *directory*'s sockets
    (``session_check_interval``), when the server has a host to ask;
    ``None`` otherwise."""
    if host is None or config.session_check_interval <= 0:
        return None
    return SessionWatch(directory, config.session_check_interval)


def admin_view(config: Config, host: Host | None, sio: Server) -> AdminView | None:
    """The Admin UI's namespace (:mod:`oe_web_socketio.admin`), when
    :attr:`Config.admin_ui` is on and a host says who administers it;
    ``None`` otherwise (the namespace is not served)."""
    if not config.admin_ui:
        return None
    if host is None:
        logger.warning("admin_ui is on, but no host says who administers: not served")
        return None
    return AdminView(
        sio,
        host,
        server_id=server_id(config.port),
        trusted_proxies=config.trusted_proxies,
    )


def served_databases(config: Config, host: Host | None) -> tuple[str, ...]:
    """The databases ``/health`` names: :attr:`Config.databases`, none for
    a host without a database (a plain WSGI application's)."""
    if host is not None and host.pools is None:
        return ()
    return config.databases


class Application:
    """The WSGI application: Socket.IO beside plain HTTP routes.

    :param config: the settings of the server.
    :param host: the host application (see :mod:`oe_web_socketio.hosts`):
        it authenticates clients; with its cursor pools (closed at
        :meth:`shutdown`) the server runs the database bridge
        (:attr:`bridge`), once :meth:`start` is called, which feeds the
        host's notification consumers; the routes and counters the host
        contributes are served beside the others (Tryton's bus, see
        :meth:`~oe_web_socketio.hosts.Host.routes`). ``None``: every
        client that presents credentials is refused (anonymous clients may
        still connect where a namespace allows them).
    :param namespaces: namespace classes to serve, by path, besides those
        of *config* (registered before the default ``/``).
    :param fallback: the WSGI application that answers the paths neither
        Socket.IO nor a route of :attr:`router` serves (a plain WSGI
        application this server is put in front of); ``None``: ``404``.
    :raises NamespaceError: a namespace cannot be registered (see
        :class:`~oe_web_socketio.sockets.SocketIO`).

    :ivar config: the settings of the server.
    :ivar sio: the :class:`socketio.Server`.
    :ivar socketio: the :class:`~oe_web_socketio.sockets.SocketIO`;
        register namespaces on it.
    :ivar router: the :class:`~.routing.Router` of plain HTTP routes.
    """

    def __init__(
        self,
        config: Config,
        host: Host | None = None,
        *,
        namespaces: Mapping[str, type[Namespace]] | None = None,
        fallback: Callable[..., Iterable[bytes]] | None = None,
    ) -> None:
        self.config = config
        self.host = host
        # The parts, each built once, complete, from those before it: the
        # Engine.IO/Socket.IO server, the directory of its sockets, the
        # broker that delivers to them, the namespaces, the watch of their
        # sessions, the long-polling routes, the router of every route.
        # Raises ConfigError (broker = postgresql without a database).
        self.manager = fanout(config, host)
        self.sio = engine(config, self.manager)
        #: This worker's row among the workers of its database, or ``None``
        #: on a host without a database.
        self.membership = membership(config, host)
        # Empty until the namespaces are served (sockets() fills it).
        directory = SocketDirectory()
        lag = metrics.lag_histogram()
        self.broker = broker(config, host, self.sio, directory, lag)
        self.presence = presence_store(self.membership)
        self.socketio = sockets(
            config, host, self.sio, self.broker, directory, namespaces, self.presence
        )
        self.sessions = session_watch(config, host, directory)
        #: The Admin UI's view of this process, when it is on.
        self.admin = admin_view(config, host, self.sio)
        # Raises RouteError, ConfigError (loads the host's models with routes).
        self.longpolling = longpolling_endpoints(config, host, self.broker)
        counters: dict[str, Callable[[], Any]] = {
            "greenlets": self.socketio.count_greenlets,
            **(host.counters() if host is not None else {}),
            **self.broker.counters(),
            "fanout": lambda: manager_state(self.manager),
            **(
                {"cluster": self.membership.state}
                if self.membership is not None
                else {}
            ),
            **({"sessions": self.sessions.stats} if self.sessions is not None else {}),
        }
        #: What ``/metrics`` answers: the figures of /health and more.
        self.metrics = metrics.registry(
            metrics.Collector(
                server=self.sio,
                socketio=self.socketio,
                count_clients=self.count_clients,
                counters=counters,
                broker=type(self.broker).__name__,
                lag=lag if isinstance(self.broker, OutboxBroker) else None,
            )
        )
        # Raises DuplicateRouteError.
        self.router = Router(
            [
                *(host.routes() if host is not None else ()),
                health_route(
                    version=__version__,
                    databases=served_databases(config, host),
                    count_clients=self.count_clients,
                    counters=counters,
                    worker=config.worker or None,
                ),
                metrics.metrics_route(self.metrics),
                # The browser client, GET /oe_web_socketio/oe_web_socketio.js.
                static_route(),
            ]
        )
        # Under Config.longpolling_path, each rule logged.
        add_routes(self.router, self.longpolling)
        self.fallback = fallback
        # Its bound __call__: called as a method, not as an instance, it runs
        # without a C recursion, which a WebSocket's greenlet would keep in
        # the heap (its C stack, saved) as long as the connection lives.
        self._wsgi_app = socketio.WSGIApp(
            self.sio,
            self.router if fallback is None else self._plain,
            socketio_path=SOCKETIO_PATH,
        ).__call__

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # Whose faults this greenlet's log lines are about (logs.RateLimit).
        logs.CLIENT.set(client_address(environ, self.config.trusted_proxies))
        if environ.get("REQUEST_METHOD") not in SOCKETIO_METHODS and str(
            environ.get("PATH_INFO", "")
        ).startswith(f"/{SOCKETIO_PATH}/"):
            # python-engineio answers "405 METHOD NOT FOUND" without Allow.
            return send(method_not_allowed(SOCKETIO_METHODS), environ, start_response)
        result: Iterable[bytes] = self._wsgi_app(environ, start_response)
        return result

    def _plain(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """A request not for Socket.IO: to a route of ours, or to the
        fallback application."""
        assert self.fallback is not None
        if self.router.serves(environ.get("PATH_INFO") or "/"):
            return self.router(environ, start_response)
        return self.fallback(environ, start_response)

    def count_clients(self) -> int:
        """Number of clients connected to at least one namespace."""
        manager = self.sio.manager
        clients = set()
        for namespace in list(manager.get_namespaces()):
            for sid, eio_sid in manager.get_participants(namespace, None):
                if manager.is_connected(sid, namespace):
                    clients.add(eio_sid)
        return len(clients)

    def join(self) -> None:
        """Join the workers of the database (see
        :mod:`oe_web_socketio.pubsub.cluster`), once; :meth:`start` does it
        too. The command line calls it before it listens, so that a
        refused worker never answers.

        :raises ClusterMismatch: the running workers use another broker.
        """
        if self.membership is not None:
            self.membership.join()

    def start(self) -> None:
        """Start the background work: the database bridge's listeners, the
        check of connected sessions, the client manager (its listener, for
        the emits of the other workers)."""
        self.join()
        if not self.sio.manager_initialized:
            # python-socketio would do it at the first connection.
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        self.broker.start()
        if self.sessions is not None:
            self.sessions.start()

    def shutdown(self) -> None:
        """Close every client session and stop Socket.IO's background tasks.

        The sessions end as a lost connection, never as the server's
        disconnect: no Socket.IO ``DISCONNECT`` and no Engine.IO ``close``
        packet, which tell a client not to come back (socket.io-client's
        "io server disconnect"; python-socketio's client stops
        reconnecting). A WebSocket gets a close frame 1001 (going away)
        and is shut down; a held polling request is answered empty, and
        the next one finds nobody listening. Clients then reconnect on
        their own, to this server once it is back, and resume. Does not
        wait for the clients.
        """
        eio = self.sio.eio
        going_away(eio)
        sessions = list(eio.sockets.values())
        logger.info("Closing %d client session(s)", len(sessions))
        for session in sessions:
            # abort: without the close packet.
            session.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
        self.sio.shutdown()
        if self.admin is not None:
            self.admin.shutdown()
        stop_manager(self.manager)
        if isinstance(self.presence, DatabasePresence):
            self.presence.close()
        if self.membership is not None:
            self.membership.leave()
        if self.sessions is not None:
            self.sessions.stop()
        self.broker.stop()
        if self.host is not None:
            self.host.close()
