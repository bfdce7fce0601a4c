"""Real-time endpoints in front of any WSGI application, on gevent.

A few lines serve an existing WSGI application with namespaces, channels
and out-of-band messages::

    from oe_web_socketio.wsgi import serve

    serve(app, namespaces={"/chat": Chat}, authenticate=authenticate, port=8080)

:class:`SocketIOMiddleware` is the WSGI application that does the routing:
paths under ``/socket.io/`` go to Socket.IO, the server's own routes
(``/health``, the long-polling routes under ``longpolling_path``, the
browser client at ``/oe_web_socketio/oe_web_socketio.js``) to the server,
everything else to the wrapped application. *authenticate* is the
application's callable ``(environ, auth) -> user or None`` (see
:mod:`oe_web_socketio.hosts.wsgi`); nothing of Tryton is imported.

Ordinary views of the application push to the sockets of the same process,
live (no database; a socket not connected at that moment misses the
message), with :func:`broadcast`, :func:`broadcast_channel` and
:func:`send`, the seed's webpy-socketio functions, or the methods of the
same names of a :class:`SocketIOMiddleware`. Messages arrive as the event
``message`` with ``(message)``, or ``(message, channel)`` on a channel, as
those a namespace sends.

:func:`publish` (and :meth:`SocketIOMiddleware.publish`) goes through the
server's in-process broker instead (:mod:`oe_web_socketio.pubsub.local`):
the message gets a position, arrives as ``(message, channel, position)``,
is kept for clients that ``resume`` and reaches long polls' ``listen``;
in this process only, and not across its restart. The three functions
above stay live emits: their clients expect one or two arguments.

Caveats:

* gevent must patch the standard library before the application and its
  framework are imported, when they keep blocking primitives or
  thread-local state (web.py does; see :mod:`oe_web_socketio.contrib.webpy`):
  call :func:`oe_web_socketio.patch.patch` first. :func:`serve` and
  :meth:`SocketIOMiddleware.run` patch too, for the code imported after.
* The module-level functions use the last :class:`SocketIOMiddleware`
  built in the process (:func:`current`); a process serving several keeps
  each one's methods.

Importing this module imports neither gevent, Socket.IO nor trytond: a
:class:`SocketIOMiddleware` imports the server when it is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ConfigError
from oe_web_socketio.patch import patch
from oe_web_socketio.pubsub import Address
from oe_web_socketio.rooms import subscribers

if TYPE_CHECKING:
    from oe_web_socketio.app import Application
    from oe_web_socketio.hosts.wsgi import Authenticate
    from oe_web_socketio.namespace import Namespace

__all__ = [
    "SocketIOMiddleware",
    "broadcast",
    "broadcast_channel",
    "config_from_settings",
    "current",
    "publish",
    "script_tags",
    "send",
    "serve",
]

logger = logging.getLogger(__name__)

WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: Where the server serves the browser client (see
#: :mod:`oe_web_socketio.static`).
SCRIPT_PATH = "/oe_web_socketio/oe_web_socketio.js"

#: The settings :func:`config_from_settings` reads, and the keys of
#: :class:`~oe_web_socketio.config.Config` they set.
SETTINGS = {"SOCKETIO_HOST": "interface", "SOCKETIO_PORT": "port"}

#: The setting naming a configuration file (section ``[oe_web_socketio]``).
SETTINGS_FILE = "SOCKETIO_CONFIG"

#: The middleware the module-level functions use, under ``"current"``.
_state: dict[str, SocketIOMiddleware] = {}


def default_config(**options: Any) -> Config:
    """The settings of a server in front of a WSGI application: those of
    :class:`~oe_web_socketio.config.Config`, without the namespaces and
    routes of installed eggs (``load_entry_points`` off: the application
    names what it serves), overridden by *options*.

    :raises ConfigError: an option is invalid.
    """
    return Config(load_entry_points=False).replace(**options)


def config_from_settings(settings: Mapping[str, Any]) -> Config:
    """The :class:`~oe_web_socketio.config.Config` of a framework's
    settings (web.py's ``web.config``, Flask's ``app.config``).

    ``SOCKETIO_CONFIG``, if set, names a configuration file (its section
    ``[oe_web_socketio]``, every key of
    :class:`~oe_web_socketio.config.Config`); ``SOCKETIO_HOST`` and
    ``SOCKETIO_PORT`` override its ``interface`` and ``port``. Without a
    file, ``load_entry_points`` is off (see :func:`default_config`).

    :raises ConfigError: the file or a setting is invalid; the message
        names the setting.
    """
    path = settings.get(SETTINGS_FILE)
    config = Config.from_file(os.fspath(path)) if path else default_config()
    overrides: dict[str, Any] = {}
    for name, key in SETTINGS.items():
        value: Any = settings.get(name)
        if value is None:
            continue
        if key == "port":
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"not a port number: {value!r}", key=name) from None
        overrides[key] = value
    try:
        return config.replace(**overrides)
    except ConfigError as exc:
        setting = next((n for n, k in SETTINGS.items() if k == exc.key), exc.key)
        raise ConfigError(exc.problem, key=setting) from None


def script_tags(path: str = SCRIPT_PATH) -> str:
    """The HTML that loads the browser client (globals ``SocketIO``,
    ``longpolling_socket``, ``start_longpolling``) in a page."""
    return f'<script src="{path}"></script>'


class SocketIOMiddleware:
    """A WSGI application: the real-time endpoints in front of *app*.

    :param app: the WSGI application answering every other path.
    :param namespaces: the :class:`~oe_web_socketio.namespace.Namespace`
        classes to serve, by path (``{"/chat": Chat}``); the base class is
        served at ``/`` unless one of them is.
    :param authenticate: the application's callable ``(environ, auth) ->
        user or None`` (see :mod:`oe_web_socketio.hosts.wsgi`); ``None``:
        every client is anonymous.
    :param config: the server's settings; default :func:`default_config`.
    :raises NamespaceError: a namespace cannot be registered.

    :ivar application: the :class:`~oe_web_socketio.app.Application`
        (``application.sio`` is python-socketio's server).
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        namespaces: Mapping[str, type[Namespace]] | None = None,
        authenticate: Authenticate | None = None,
        config: Config | None = None,
    ) -> None:
        from oe_web_socketio.app import Application
        from oe_web_socketio.hosts.wsgi import WSGIHost

        self.app = app
        self.config = config if config is not None else default_config()
        self.application: Application = Application(
            self.config,
            WSGIHost(authenticate),
            namespaces=namespaces,
            fallback=app,
        )
        _state["current"] = self

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return self.application(environ, start_response)

    # --- out-of-band messages

    def _paths(self, namespace: str | None) -> list[str]:
        if namespace is not None:
            return [namespace]
        return list(self.application.socketio.namespaces)

    def emit(
        self,
        event: str,
        *args: Any,
        to: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """Emit *event* with *args* to the sockets of the room *to* (a
        channel, or a socket's sid), or to every socket, of *namespace*
        (``None``: of every namespace served)."""
        for path in self._paths(namespace):
            self.application.sio.emit(event, args, to=to, namespace=path)

    def broadcast(self, message: Any, namespace: str | None = None) -> None:
        """Send *message* to every socket of *namespace* (``None``: of
        every namespace): the event ``message`` with ``(message)``."""
        self.emit("message", message, namespace=namespace)

    def broadcast_channel(
        self, message: Any, channel: str, namespace: str | None = None
    ) -> None:
        """Send *message* to the sockets subscribed to *channel* in
        *namespace* (``None``: in every namespace): the event ``message``
        with ``(message, channel)``."""
        self.emit(
            "message", message, channel, to=subscribers(channel), namespace=namespace
        )

    def send(self, sid: str, message: Any, namespace: str | None = None) -> None:
        """Send *message* to the one socket *sid* (``self.sid`` of its
        namespace instance): the event ``message`` with ``(message)``."""
        self.emit("message", message, to=sid, namespace=namespace)

    def publish(
        self, message: Any, channel: str | None = None, namespace: str | None = None
    ) -> None:
        """Publish *message* through the in-process broker, on *channel*
        (``None``: to every socket) of *namespace* (``None``: of every
        namespace): the event ``message`` with ``(message, channel,
        position)``, replayed to clients that resume (see the module)."""
        broker = self.application.broker
        database = broker.default_database or ""
        broker.publish(Address(database, namespace, channel), message)

    # --- serving

    def run(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        wsgi_app: WSGIApplication | None = None,
    ) -> None:
        """Serve on gevent until SIGTERM or SIGINT, then stop gracefully.

        :param host: the address to listen on; default the config's
            ``interface``.
        :param port: the TCP port; default the config's ``port`` (``0``
            picks a free one, logged).
        :param wsgi_app: what to serve, if not this middleware (a framework
            object whose WSGI entry calls it, such as a Flask app).
        :raises ListenError: the address cannot be listened on.
        """
        patch()
        from oe_web_socketio import limits
        from oe_web_socketio.cli import configure_logging, serve
        from oe_web_socketio.server import make_server

        if not logging.getLogger().handlers:
            configure_logging(self.config.log_level)
        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["interface"] = host
        if port is not None:
            overrides["port"] = port
        config = self.config.replace(**overrides)
        # The application raised the open files limit; the cap of
        # connections at once follows from it (as on the command line).
        eio = self.application.sio.eio
        server = make_server(
            config,
            wsgi_app if wsgi_app is not None else self,
            max_connections=eio.max_open_connections,
        )
        server.start()
        logger.info("Listening on %s", server.url)
        logger.info(limits.describe_open_files(eio, server.max_connections))
        self.application.start()
        serve(server, self.application)


def serve(
    app: WSGIApplication,
    *,
    namespaces: Mapping[str, type[Namespace]] | None = None,
    authenticate: Authenticate | None = None,
    host: str | None = None,
    port: int | None = None,
    config: Config | None = None,
) -> None:
    """Serve *app* with the real-time endpoints on gevent until SIGTERM or
    SIGINT (see :class:`SocketIOMiddleware` and
    :meth:`SocketIOMiddleware.run`)."""
    patch()
    SocketIOMiddleware(
        app, namespaces=namespaces, authenticate=authenticate, config=config
    ).run(host, port)


def current() -> SocketIOMiddleware:
    """The last :class:`SocketIOMiddleware` built in this process.

    :raises RuntimeError: none was.
    """
    middleware = _state.get("current")
    if middleware is None:
        raise RuntimeError(
            "no SocketIOMiddleware in this process: serve the application "
            "with oe_web_socketio.wsgi first"
        )
    return middleware


def broadcast(message: Any, namespace: str | None = None) -> None:
    """:meth:`SocketIOMiddleware.broadcast` of :func:`current`."""
    current().broadcast(message, namespace)


def broadcast_channel(message: Any, channel: str, namespace: str | None = None) -> None:
    """:meth:`SocketIOMiddleware.broadcast_channel` of :func:`current`."""
    current().broadcast_channel(message, channel, namespace)


def publish(
    message: Any, channel: str | None = None, namespace: str | None = None
) -> None:
    """:meth:`SocketIOMiddleware.publish` of :func:`current`."""
    current().publish(message, channel, namespace)


def send(sid: str, message: Any, namespace: str | None = None) -> None:
    """:meth:`SocketIOMiddleware.send` of :func:`current`."""
    current().send(sid, message, namespace)
