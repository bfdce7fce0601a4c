"""The plain WSGI host: the application authenticates, there is no database.

Any WSGI application (plain, web.py, Flask…) is a host once it gives a
callable that tells who a client is::

    def authenticate(environ, auth):
        token = (auth or {}).get("token") if isinstance(auth, dict) else None
        return USERS.get(token)  # a login, or None: no credentials

It is called with the WSGI environ of the request (the Socket.IO handshake,
or a plain HTTP request to a long-polling route; an empty mapping for the
``session_id`` event) and the Socket.IO ``auth`` payload (``None`` for plain
HTTP; the event's argument for ``session_id``). It returns:

* ``None``: the client presents no credentials (it connects where the
  namespace allows anonymous clients, and is refused elsewhere);
* a user: a non-empty :class:`str` (the login), a mapping with a non-empty
  string ``"login"`` and optionally ``"uid"`` (an :class:`int` or a
  :class:`str`), or an :class:`~oe_web_socketio.auth.Identity`.

To refuse presented credentials with a reason the client sees, it raises
:class:`~oe_web_socketio.exceptions.AuthenticationError`. Anything else it
raises, or a value that is not a user, is a fault of the application: its
traceback (or the value) is logged once, on the logger
``oe_web_socketio.hosts.wsgi``, and the client is refused with
:data:`~oe_web_socketio.hosts.HOST_FAILURE`; the server goes on serving
the others.

Identities of this host have no database (``db`` is ``None``): its
sockets belong to the one in-memory database of the process's broker
(:mod:`oe_web_socketio.pubsub.local`; see :mod:`oe_web_socketio.wsgi`).
Importing this module imports neither trytond nor gevent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from oe_web_socketio.auth import Identity
from oe_web_socketio.exceptions import AuthenticationError
from oe_web_socketio.hosts import HOST_FAILURE, Host, HostError

__all__ = ["Authenticate", "WSGIHost", "identity_of"]

logger = logging.getLogger(__name__)

#: The application's callable: ``(environ, auth) -> user or None``.
Authenticate = Callable[[Mapping[str, Any], Any], Any]

#: Longest login accepted from the application.
MAX_LOGIN_LENGTH = 256


def _anonymous(environ: Mapping[str, Any], auth: Any) -> Any:
    """The callable of a host given none: every client is anonymous."""
    return None


class WSGIHost(Host):
    """The host of a plain WSGI application.

    :param authenticate: the application's callable (see the module's
        docstring); ``None``: every client is anonymous.
    """

    name = "wsgi"

    def __init__(self, authenticate: Authenticate | None = None) -> None:
        if authenticate is not None and not callable(authenticate):
            raise TypeError(f"authenticate must be callable, got {authenticate!r}")
        self._authenticate = authenticate or _anonymous

    def __repr__(self) -> str:
        return f"<WSGIHost {_name(self._authenticate)}>"

    def authenticate(
        self, environ: Mapping[str, Any], auth: Any, address: str | None
    ) -> Identity | None:
        """Ask the application who the client is.

        :raises AuthenticationError: the application refused the client.
        :raises HostError: the application raised anything else, or
            answered what is not a user (logged once here).
        """
        try:
            user = self._authenticate(environ, auth)
        except AuthenticationError:
            raise
        except Exception:
            logger.exception(
                "The authenticate callable %s raised for %s",
                _name(self._authenticate),
                address or "an unknown address",
            )
            raise HostError(HOST_FAILURE) from None
        if user is None:
            return None
        identity = identity_of(user)
        if identity is None:
            text = repr(user)
            if len(text) > 80:
                text = text[:77] + "..."
            logger.error(
                "The authenticate callable %s returned %s for %s: not a user "
                "(a login, a mapping with 'login', an Identity, or None)",
                _name(self._authenticate),
                text,
                address or "an unknown address",
            )
            raise HostError(HOST_FAILURE)
        return identity


def identity_of(user: Any) -> Identity | None:
    """The :class:`~oe_web_socketio.auth.Identity` of what an authenticate
    callable returned, or ``None`` if it is not a user."""
    if isinstance(user, Identity):
        return user
    login: Any
    uid: Any = None
    if isinstance(user, str):
        login = user
    elif isinstance(user, Mapping):
        login = user.get("login")
        uid = user.get("uid")
    else:
        return None
    if not isinstance(login, str) or not 0 < len(login) <= MAX_LOGIN_LENGTH:
        return None
    # bool is an int: True is no user id.
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int | str)):
        return None
    return Identity(db=None, uid=uid, login=login)


def _name(function: Any) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{name}" if module else name
