"""The live admin view: the namespace of the Socket.IO Admin UI, for the
host application's administrators only.

python-socketio speaks the Admin UI's protocol
(:class:`socketio.admin.InstrumentedServer`): it serves the namespace
:data:`NAMESPACE`, sends the UI every socket, room and event of the
process, and every :attr:`AdminView.server_stats_interval` seconds the
process's figures, under its server id (:func:`server_id`: one per
worker). :class:`AdminView` is that instrumentation with this project's
access rule, applied when the UI's socket connects:

* the client presents a session as any socket does (see
  :mod:`oe_web_socketio.auth`: the ``tryton_session`` cookie, which the
  browser sends to ``/<database>/socket.io/``, nginx's path for it; an
  ``Authorization`` header; ``{"session": …}`` in the ``auth`` payload),
  for the database the request names (``X-Tryton-Database``, set by
  nginx from that path) or the server's first;
* the host says whether that user administers it
  (:meth:`~oe_web_socketio.hosts.Host.administers`: Tryton's group
  "Administration"); anyone else is refused (``authentication_failed``
  without a valid session, ``forbidden`` otherwise), with one log line.

The view is read-only (the UI can watch, not emit, join, leave or
disconnect), and the ``Cookie`` and ``Authorization`` headers of the
sockets it shows are hidden: they carry sessions.

Caveats: instrumenting wraps python-socketio's emit and event paths
(``development`` mode, the one that lists sockets), which costs on every
emit: the view is off unless :attr:`Config.admin_ui
<oe_web_socketio.config.Config.admin_ui>` turns it on. When it is off
the namespace is not served (a connection to it is refused as any unknown
path). A socket of another worker reaches the UI through the events
python-socketio's manager carries between workers (see
:mod:`oe_web_socketio.pubsub`); the list the UI receives when it connects
is the sockets of the worker it reached.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import socketio
import socketio.admin
from socketio import exceptions as sio_exceptions

from oe_web_socketio import auth
from oe_web_socketio.exceptions import AuthenticationError, DatabaseUnavailable
from oe_web_socketio.hosts import Host
from oe_web_socketio.protocol import AUTHENTICATION_FAILED, FORBIDDEN, UNAVAILABLE

logger = logging.getLogger(__name__)

#: The namespace of the Admin UI (the UI's default).
NAMESPACE = "/admin"

#: What replaces a header that carries a session, in what the UI shows.
HIDDEN = "(hidden)"

#: The headers of a socket's handshake the UI never sees.
SECRET_HEADERS = frozenset({"cookie", "authorization"})


def server_id(port: int) -> str:
    """How the UI names the worker listening on *port*: ``host:port``."""
    return f"{socket.gethostname()}:{port}"


class AdminView(socketio.admin.InstrumentedServer):
    """python-socketio's instrumentation for the Admin UI, read-only,
    reachable by the administrators of *host* only.

    :param server: the Socket.IO server to instrument (from now on).
    :param host: who authenticates the UI's socket and says whether its
        user administers the host application.
    :param server_id: the name of this worker in the UI.
    :param trusted_proxies: see :attr:`Config.trusted_proxies
        <oe_web_socketio.config.Config.trusted_proxies>`.
    """

    def __init__(
        self,
        server: socketio.Server,
        host: Host,
        *,
        server_id: str,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.trusted_proxies = trusted_proxies
        # auth: checked in admin_connect, which has the request.
        super().__init__(
            server,
            auth=lambda _payload: True,
            mode="development",
            read_only=True,
            server_id=server_id,
            namespace=NAMESPACE,
        )

    def admin_connect(
        self, sid: str, environ: Mapping[str, Any], client_auth: Any
    ) -> Any:
        """Refuse the UI's socket unless its user administers the host."""
        address = auth.client_address(environ, self.trusted_proxies)
        refusal = self.refusal(environ, client_auth, address)
        if refusal is not None:
            code, reason = refusal
            logger.warning(
                "Refused the Admin UI to %s: %s",
                address,
                reason,
                extra={"client": address},  # logs.RateLimit's key
            )
            raise sio_exceptions.ConnectionRefusedError(reason, {"code": code})
        return super().admin_connect(sid, environ, client_auth)

    def refusal(
        self, environ: Mapping[str, Any], client_auth: Any, address: str | None
    ) -> tuple[str, str] | None:
        """``(code, reason)`` if the client of *environ* may not watch,
        else ``None``.

        The UI's own login form sends ``{"username", "password"}``, which
        mean nothing here: only a ``session`` in the payload counts, with
        the database the request names.
        """
        payload: dict[str, Any] = {}
        if isinstance(client_auth, Mapping) and isinstance(
            client_auth.get("session"), str
        ):
            payload["session"] = client_auth["session"]
        database = self.host.named_database(environ)
        if database is not None:
            payload["database"] = database
        try:
            identity = self.host.authenticate(environ, payload, address)
            if identity is None:
                return AUTHENTICATION_FAILED, "authentication required"
            if not self.host.administers(identity):
                return FORBIDDEN, "administrators only"
        except AuthenticationError as exc:
            return AUTHENTICATION_FAILED, str(exc)
        except DatabaseUnavailable as exc:
            logger.error("Cannot check an administrator: %s", exc)
            return UNAVAILABLE, "try again later"
        return None

    def serialize_socket(
        self, sid: str, namespace: str, eio_sid: str | None = None
    ) -> dict[str, Any]:
        """What the UI shows of a socket, sessions hidden."""
        serialized: dict[str, Any] = super().serialize_socket(sid, namespace, eio_sid)
        headers = serialized["handshake"]["headers"]
        for name in SECRET_HEADERS & headers.keys():
            headers[name] = HIDDEN
        return serialized
