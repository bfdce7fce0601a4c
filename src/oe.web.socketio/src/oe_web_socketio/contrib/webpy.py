"""web.py integration: ``socketio_urls``, settings, the client's script.

An application adds :data:`socketio_urls` to its urls and runs with
:func:`run` instead of ``app.run()``::

    from oe_web_socketio.patch import patch

    patch()  # before web.py: its request context must be greenlet-local
    import web
    from oe_web_socketio.contrib import webpy as socketio_webpy

    urls = ("/", "Index") + socketio_webpy.socketio_urls
    app = web.application(urls, globals())
    web.config.SOCKETIO_PORT = 8080
    socketio_webpy.run(app, namespaces={"/chat": Chat}, authenticate=authenticate)

Settings, in ``web.config``: ``SOCKETIO_HOST`` (default ``127.0.0.1``),
``SOCKETIO_PORT`` (default 8068) and ``SOCKETIO_CONFIG``, the path of a
configuration file with a section ``[oe_web_socketio]`` (``interface``,
``port`` and every other setting); arguments of :func:`run` win. A
template includes the client with ``$:socketio_scripts()`` when rendered
with ``globals={"socketio_scripts": socketio_scripts}``.

How requests flow: under :func:`run` (or :func:`wsgifunc` under another
gevent server) a :class:`~oe_web_socketio.wsgi.SocketIOMiddleware` in
front of web.py answers Socket.IO, WebSocket included, and the server's
routes; :data:`socketio_urls` maps the same paths in web.py itself to
:class:`SocketIORelay`, which answers them through web.py's handlers when
a request reaches web.py anyway (a sub-application, ``app.request()`` in
tests): everything but a WebSocket, which needs the middleware.

Caveat: web.py keeps ``web.ctx`` in a :class:`threading.local` created when
``web`` is imported; unless gevent patched the standard library first, it
is shared by every greenlet and concurrent requests see each other's.
:func:`run` and :func:`wsgifunc` refuse to serve such an application.

Out-of-band messages from a view: :func:`broadcast`,
:func:`broadcast_channel`, :func:`send` (see :mod:`oe_web_socketio.wsgi`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import web

from oe_web_socketio import wsgi
from oe_web_socketio.wsgi import broadcast, broadcast_channel, script_tags, send

if TYPE_CHECKING:
    from oe_web_socketio.config import Config
    from oe_web_socketio.hosts.wsgi import Authenticate
    from oe_web_socketio.namespace import Namespace

__all__ = [
    "SocketIORelay",
    "broadcast",
    "broadcast_channel",
    "run",
    "send",
    "socketio_scripts",
    "socketio_urls",
    "wsgifunc",
]

#: The handler of :data:`socketio_urls`, by the dotted name web.py imports.
RELAY = f"{__name__}.SocketIORelay"

#: Paths of the real-time server, to add to an application's urls.
socketio_urls: tuple[str, ...] = (
    "/socket.io/.*",
    RELAY,
    "/oe_web_socketio/.*",
    RELAY,
    "/health",
    RELAY,
    "/longpolling/.*",
    RELAY,
)

#: The template global that includes the client's script.
socketio_scripts = script_tags


class SocketIORelay:
    """web.py's handler of :data:`socketio_urls`: relays the request to
    the real-time server of :func:`oe_web_socketio.wsgi.current`."""

    def _relay(self, *groups: str) -> bytes:
        environ = web.ctx.env
        if str(environ.get("HTTP_UPGRADE", "")).lower() == "websocket":
            raise web.HTTPError(
                "400 Bad Request",
                {"Content-Type": "text/plain"},
                "a WebSocket needs the middleware: serve with "
                "oe_web_socketio.contrib.webpy.run or wsgifunc",
            )
        application = wsgi.current().application
        path = str(environ.get("PATH_INFO") or "/")
        target: Callable[..., Iterable[bytes]] = (
            application if path.startswith("/socket.io/") else application.router
        )
        answer: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            answer["status"], answer["headers"] = status, headers
            return lambda data: None

        body = b"".join(target(environ, start_response))
        web.ctx.status = answer.get("status", "500 Internal Server Error")
        for name, value in answer.get("headers", ()):
            web.header(name, value)
        return body

    GET = POST = PUT = DELETE = OPTIONS = HEAD = _relay


def _check_greenlet_local() -> None:
    import gevent.local

    greenlet_local = issubclass(web.utils.threadeddict, gevent.local.local)
    if not greenlet_local:
        raise RuntimeError(
            "web.py was imported before gevent patched the standard library: "
            "call oe_web_socketio.patch.patch() before 'import web'"
        )


def wsgifunc(
    app: web.application,
    *,
    namespaces: Mapping[str, type[Namespace]] | None = None,
    authenticate: Authenticate | None = None,
    config: Config | None = None,
) -> wsgi.SocketIOMiddleware:
    """*app*'s WSGI function behind a
    :class:`~oe_web_socketio.wsgi.SocketIOMiddleware`, with the settings of
    ``web.config`` unless *config* is given.

    :raises RuntimeError: web.py was imported before gevent's patch.
    """
    _check_greenlet_local()
    if config is None:
        config = wsgi.config_from_settings(web.config)
    return wsgi.SocketIOMiddleware(
        app.wsgifunc(),
        namespaces=namespaces,
        authenticate=authenticate,
        config=config,
    )


def run(
    app: web.application,
    *,
    namespaces: Mapping[str, type[Namespace]] | None = None,
    authenticate: Authenticate | None = None,
    host: str | None = None,
    port: int | None = None,
    config: Config | None = None,
) -> None:
    """Serve *app* and the real-time endpoints on gevent until SIGTERM or
    SIGINT, at ``SOCKETIO_HOST``:``SOCKETIO_PORT`` unless *host* and
    *port* say otherwise (see :func:`wsgifunc`)."""
    wsgifunc(app, namespaces=namespaces, authenticate=authenticate, config=config).run(
        host, port
    )
