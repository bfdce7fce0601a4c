"""Flask integration: the extension :class:`SocketIO`.

In Flask's idiom::

    from flask import Flask
    from oe_web_socketio.contrib.flask import SocketIO

    app = Flask(__name__)
    app.config["SOCKETIO_PORT"] = 8080
    socketio = SocketIO(app, namespaces={"/chat": Chat}, authenticate=authenticate)

    @app.post("/announce")
    def announce():
        socketio.broadcast_channel({"text": "hello"}, "room-lobby")
        return {"sent": True}

    if __name__ == "__main__":
        socketio.run(app)

or ``socketio = SocketIO(namespaces=…)`` then ``socketio.init_app(app)``
in an application factory. :meth:`SocketIO.init_app` puts a
:class:`~oe_web_socketio.wsgi.SocketIOMiddleware` in front of
``app.wsgi_app`` (Socket.IO and the server's routes first, then Flask),
records the extension as ``app.extensions["oe_web_socketio"]`` and adds the
template global ``socketio_scripts()``: ``{{ socketio_scripts() }}`` loads
the browser client.

Configuration keys: ``SOCKETIO_HOST`` (default ``127.0.0.1``),
``SOCKETIO_PORT`` (default 8068), ``SOCKETIO_CONFIG`` (the path of a
configuration file, section ``[oe_web_socketio]``, with every setting);
arguments of :meth:`SocketIO.run` win.

Flask keeps its request context in context variables, which each greenlet
has of its own: no patch is needed before ``import flask``, though
:meth:`SocketIO.run` patches for the code that runs after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import flask
import markupsafe

from oe_web_socketio import wsgi

if TYPE_CHECKING:
    from oe_web_socketio.config import Config
    from oe_web_socketio.hosts.wsgi import Authenticate
    from oe_web_socketio.namespace import Namespace

__all__ = ["EXTENSION", "SocketIO"]

#: The key of the extension in ``app.extensions``.
EXTENSION = "oe_web_socketio"


def socketio_scripts() -> markupsafe.Markup:
    """The template global: the HTML that loads the browser client."""
    return markupsafe.Markup(wsgi.script_tags())


class SocketIO:
    """The real-time endpoints of a Flask application.

    :param app: the application, or ``None`` to call :meth:`init_app`
        later.
    :param namespaces: the namespace classes to serve, by path.
    :param authenticate: the application's callable ``(environ, auth) ->
        user or None`` (see :mod:`oe_web_socketio.hosts.wsgi`).
    :param config: the server's settings; default from ``app.config``
        (see :func:`oe_web_socketio.wsgi.config_from_settings`).

    :ivar middleware: the :class:`~oe_web_socketio.wsgi.SocketIOMiddleware`,
        once :meth:`init_app` ran.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        namespaces: Mapping[str, type[Namespace]] | None = None,
        authenticate: Authenticate | None = None,
        config: Config | None = None,
    ) -> None:
        self.namespaces = dict(namespaces or {})
        self.authenticate = authenticate
        self.config = config
        self.middleware: wsgi.SocketIOMiddleware | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Serve the real-time endpoints in front of *app*.

        :raises ConfigError: a ``SOCKETIO_*`` key is invalid.
        :raises NamespaceError: a namespace cannot be registered.
        """
        config = self.config
        if config is None:
            config = wsgi.config_from_settings(app.config)
        self.middleware = wsgi.SocketIOMiddleware(
            app.wsgi_app,
            namespaces=self.namespaces,
            authenticate=self.authenticate,
            config=config,
        )
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION] = self
        app.add_template_global(socketio_scripts, "socketio_scripts")

    def _middleware(self) -> wsgi.SocketIOMiddleware:
        if self.middleware is None:
            raise RuntimeError("call SocketIO.init_app(app) first")
        return self.middleware

    def run(
        self, app: flask.Flask, host: str | None = None, port: int | None = None
    ) -> None:
        """Serve *app* on gevent until SIGTERM or SIGINT, at
        ``SOCKETIO_HOST``:``SOCKETIO_PORT`` unless *host* and *port* say
        otherwise."""
        self._middleware().run(host, port, wsgi_app=app)

    def emit(
        self,
        event: str,
        *args: Any,
        to: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """See :meth:`oe_web_socketio.wsgi.SocketIOMiddleware.emit`."""
        self._middleware().emit(event, *args, to=to, namespace=namespace)

    def broadcast(self, message: Any, namespace: str | None = None) -> None:
        """Send *message* to every socket (see
        :meth:`~oe_web_socketio.wsgi.SocketIOMiddleware.broadcast`)."""
        self._middleware().broadcast(message, namespace)

    def broadcast_channel(
        self, message: Any, channel: str, namespace: str | None = None
    ) -> None:
        """Send *message* to the subscribers of *channel* (see
        :meth:`~oe_web_socketio.wsgi.SocketIOMiddleware.broadcast_channel`)."""
        self._middleware().broadcast_channel(message, channel, namespace)

    def send(self, sid: str, message: Any, namespace: str | None = None) -> None:
        """Send *message* to the socket *sid* (see
        :meth:`~oe_web_socketio.wsgi.SocketIOMiddleware.send`)."""
        self._middleware().send(sid, message, namespace)
