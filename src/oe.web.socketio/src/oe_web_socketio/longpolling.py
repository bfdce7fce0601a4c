"""Long-polling routes: plain HTTP handlers that may wait for news.

A distribution declares routes with the :data:`longpolling` registry::

    from oe_web_socketio.longpolling import longpolling

    @longpolling.route("/mainroute")
    @longpolling.route("/varroute/<var1>/<var2>", mode="http")
    def myfunction(request, var1=None, var2=None, **params):
        users = request.model("res.user").search_read([], fields_names=["login"])
        ...

and makes its module known to the server through the entry point group
:data:`ENTRY_POINT_GROUP` (or the ``longpolling_modules`` setting)::

    [project.entry-points."oe_web_socketio.longpolling"]
    my_routes = "my_egg.routes"

Each route is served under the prefix ``longpolling_path`` (default
``/longpolling``): ``/longpolling/varroute/a/b``. At start each rule is
logged: ``Add the rule: 'myfunction:/longpolling/varroute/<var1>/<var2>'``.

:meth:`LongPolling.route` takes ``path`` (default ``/``; werkzeug
placeholders ``<name>``, ``<int:name>``…), ``mode`` (``json``, the default,
or ``http``) and ``mustbeauthenticated`` (default ``True``); a wrong
argument raises :class:`RouteError` at declaration, naming the route and
the argument. Stacked decorators serve one function at several paths.

The protocol, for every route (``GET`` or ``POST``; ``HEAD`` is answered
as ``GET`` without the body, as every route of the router):

* Parameters: the path's placeholders, the query string, and a ``POST``
  body that is a JSON object (``Content-Type: application/json``) or a
  form (``application/x-www-form-urlencoded``), all passed to the handler
  as keyword arguments. A parameter the handler annotates ``int``,
  ``float``, ``bool`` or ``str`` (or one of them ``| None``) is converted
  from the text of the query string or form (``bool``: ``1``/``0``,
  ``true``/``false``, ``yes``/``no``, ``on``/``off``) and must be of that
  type in JSON (see :func:`convert`); others arrive as sent. A name given
  twice, malformed JSON, a body of another type, a value that is not of
  the annotated type, or arguments the handler's signature refuses:
  ``400`` (``415`` for the type, ``413`` above ``longpolling_max_body``).
* Authentication: by the server's host
  (:meth:`~oe_web_socketio.hosts.Host.authenticate_request`); for Tryton,
  the ``Authorization: Session base64(login:uid:key)`` header or Tryton 8's
  ``tryton_session`` cookie, and the header ``X-Tryton-Database`` names
  the database (default: the first served). Credentials presented and
  refused, or none on a ``mustbeauthenticated`` route: ``401`` with
  ``WWW-Authenticate: Session``.
* The answer: in ``json`` mode the handler's return value as JSON; in
  ``http`` mode a :class:`str` (``text/plain``, UTF-8) or :class:`bytes`
  (``application/octet-stream``); in both, a
  :class:`~oe_web_socketio.routing.Response` is sent as it is. Nothing is
  cached (``Cache-Control: no-store``).
* Waiting: a handler waits for news with :meth:`LongPollingRequest.wait`,
  at most :func:`get_timeout` seconds (``longpolling_timeout``) after the
  request arrived. When that time is over without news, the client gets
  ``204 No Content``: nothing new, poll again.
* Faults: a handler that raises :class:`~oe_web_socketio.routing.HTTPError`
  refuses the request with its status; any other exception is a ``500``
  with one logged traceback. A database that is out of reach or busy
  (every cursor in use for ``pool_timeout`` seconds): ``503`` with
  ``Retry-After`` and one log line. Unknown path ``404``, other method
  ``405`` (:class:`~oe_web_socketio.routing.Router`).

Invariants: a handler's transaction ends (rolled back, its cursor free)
before its answer is sent, whatever the handler did; and a handler
waiting in :meth:`LongPollingRequest.wait` holds no cursor (it ends the
transaction first).

Caveats: the time limit applies to :meth:`LongPollingRequest.wait` and,
through PostgreSQL's ``statement_timeout`` (``longpolling_timeout``
seconds), to each SQL statement; a handler blocked any other way (a
``gevent.sleep``, a call to another server) is not interrupted, and
holds its transaction meanwhile if one is open. Handlers run in the
request's greenlet: one that spawns greenlets must not use the models in
them.

What depends on the host application (see :mod:`oe_web_socketio.hosts`)
is asked of it: who sends a request, which database an anonymous one
names, what its models are told of the request
(:meth:`~oe_web_socketio.hosts.Host.request_context`), and the models
themselves (:meth:`~oe_web_socketio.hosts.Host.orm`: an :class:`ORM`;
none unless the host gives them). Without a host, a server's routes
are anonymous (:class:`~oe_web_socketio.hosts.SessionHost` without
authenticator: sessions presented are refused).

Importing this module imports neither gevent's patch nor trytond: the
models come from the host (for Tryton
:class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`), which the wiring
(:func:`serve_longpolling`) asks for after the patch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import inspect
import json
import logging
import math
import time
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from http import HTTPStatus
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import greenlet
from werkzeug.routing import Map, Rule

from oe_web_socketio import pubsub
from oe_web_socketio.auth import Identity, client_address
from oe_web_socketio.exceptions import (
    AuthenticationError,
    DatabaseUnavailable,
    HostError,
    HTTPError,
    PollTimeout,
    PoolTimeout,
    RouteError,
)
from oe_web_socketio.hosts import Host, SessionHost
from oe_web_socketio.routing import Request, Response, Route, Router

if TYPE_CHECKING:
    from oe_web_socketio.config import Config
    from oe_web_socketio.pubsub import Broker

logger = logging.getLogger(__name__)

#: The entry point group of modules (or :class:`LongPolling` registries)
#: that declare long-polling routes.
ENTRY_POINT_GROUP = "oe_web_socketio.longpolling"

#: The values of a route's ``mode``.
MODES = ("json", "http")

#: Methods every route accepts (and HEAD, which werkzeug adds to GET).
METHODS = frozenset({"GET", "POST"})

F = TypeVar("F", bound=Callable[..., Any])


class ORM(Protocol):
    """The models a host gives the routes (:meth:`~oe_web_socketio.hosts.Host.orm`;
    Tryton's: :class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`)."""

    def transaction(
        self,
        database: str,
        uid: int,
        *,
        request: Mapping[str, Any] | None = None,
        statement_timeout: int | None = None,
    ) -> AbstractContextManager[Any]:
        """A read-only transaction on *database* as user *uid*, ended (and
        its cursor free) when the ``with`` block ends, whatever happened.

        :param request: what the host tells its models of the request
            (:meth:`~oe_web_socketio.hosts.Host.request_context`).
        :param statement_timeout: seconds each statement may run.
        :raises PoolTimeout: no cursor came free in time.
        :raises DatabaseUnavailable: the database is out of reach.
        """
        ...

    def models(self, database: str) -> Any:
        """The models of *database*, by name (``get(name)``)."""
        ...


@dataclasses.dataclass(frozen=True)
class RouteSpec:
    """A route as declared: its path (without the prefix), handler, mode
    and whether it needs an authenticated user."""

    path: str
    function: Callable[..., Any]
    mode: str = "json"
    mustbeauthenticated: bool = True

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))


class LongPolling:
    """A registry of long-polling routes, filled by :meth:`route`."""

    def __init__(self) -> None:
        self._routes: list[RouteSpec] = []

    @property
    def routes(self) -> tuple[RouteSpec, ...]:
        """The routes declared so far, in order."""
        return tuple(self._routes)

    def route(
        self, path: str = "/", mode: str = "json", mustbeauthenticated: bool = True
    ) -> Callable[[F], F]:
        """Declare the decorated function the handler of *path*.

        The function is called with a :class:`LongPollingRequest`, then the
        path's placeholders and the request's parameters as keyword
        arguments; it is returned unchanged, so decorators stack.

        :param path: the path under the prefix, starting with ``/``;
            werkzeug placeholders (``<name>``, ``<int:name>``) allowed.
        :param mode: ``"json"`` (the result is sent as JSON) or
            ``"http"`` (a :class:`str`, :class:`bytes` or
            :class:`~oe_web_socketio.routing.Response`).
        :param mustbeauthenticated: refuse requests without a valid session
            (``401``).
        :raises RouteError: an argument is wrong, the function does not
            accept the path's placeholders, or the path is declared twice.
        """
        check_route_arguments(path, mode, mustbeauthenticated)

        def decorator(function: F) -> F:
            spec = RouteSpec(path, function, mode, mustbeauthenticated)
            check_handler(spec)
            for existing in self._routes:
                if existing.path == path:
                    if existing == spec:
                        return function
                    raise RouteError(
                        path,
                        "path",
                        f"declared twice, by {existing.name} and {spec.name}",
                    )
            self._routes.append(spec)
            return function

        return decorator


#: The registry of :data:`ENTRY_POINT_GROUP` modules and of
#: ``longpolling_modules``.
longpolling = LongPolling()


def check_route_arguments(path: Any, mode: Any, mustbeauthenticated: Any) -> None:
    """Refuse wrong :meth:`LongPolling.route` arguments.

    :raises RouteError: naming the route and the argument.
    """
    shown = path if isinstance(path, str) else repr(path)
    if not isinstance(path, str) or not path.startswith("/"):
        raise RouteError(
            shown, "path", f"must be a string starting with '/', got {path!r}"
        )
    if any(char in path for char in "?# \t\r\n"):
        raise RouteError(path, "path", "must not hold a query, fragment or space")
    try:
        placeholders(path)
    except ValueError as exc:
        raise RouteError(path, "path", f"not a valid rule: {exc}") from None
    if mode not in MODES:
        raise RouteError(path, "mode", f"must be 'json' or 'http', got {mode!r}")
    if not isinstance(mustbeauthenticated, bool):
        raise RouteError(
            path,
            "mustbeauthenticated",
            f"must be True or False, got {mustbeauthenticated!r}",
        )


def placeholders(path: str) -> tuple[str, ...]:
    """The names of the placeholders of the werkzeug rule *path*.

    :raises ValueError: *path* is not a valid rule.
    """
    rule = Rule(path)
    Map([rule])  # compiles the rule
    return tuple(sorted(rule.arguments))


def check_handler(spec: RouteSpec) -> None:
    """Refuse a handler that cannot be called with a request and the
    path's placeholders.

    :raises RouteError: naming the route and the function.
    """
    if not callable(spec.function):
        raise RouteError(
            spec.path, None, f"the handler {spec.function!r} is not callable"
        )
    names = placeholders(spec.path)
    if "request" in names:
        raise RouteError(spec.path, "path", "'request' cannot be a placeholder")
    try:
        signature = inspect.signature(spec.function)
    except (TypeError, ValueError):
        return  # a builtin, say: checked at each call
    try:
        signature.bind_partial(None, **dict.fromkeys(names))
    except TypeError as exc:
        raise RouteError(
            spec.path,
            "path",
            f"{spec.name} cannot take the request and the placeholders "
            f"{', '.join(names) or '(none)'}: {exc}",
        ) from None


# -- the request a handler gets -------------------------------------------

_current: contextvars.ContextVar[LongPollingRequest] = contextvars.ContextVar(
    "oe_web_socketio.longpolling.request"
)


def get_timeout() -> float:
    """Seconds the handler running in this greenlet may wait for news, in
    all (``longpolling_timeout``).

    :raises RuntimeError: not called from a long-polling handler.
    """
    try:
        return _current.get().get_timeout()
    except LookupError:
        raise RuntimeError("get_timeout() is for long-polling handlers") from None


class LongPollingRequest:
    """What a long-polling handler gets.

    :ivar http: the :class:`~oe_web_socketio.routing.Request` (``environ``,
        ``method``, ``path``, ``path_args``).
    :ivar database: the database of the request.
    :ivar identity: the :class:`~oe_web_socketio.auth.Identity` of an
        authenticated user, else ``None``.
    :ivar uid: the user's id, ``None`` unless authenticated.
    :ivar login: the user's login, ``None`` unless authenticated.
    :ivar address: the client's address (as Tryton binds sessions to it).
    :ivar params: the keyword arguments the handler is called with.
    :ivar deadline: when waiting ends (:func:`time.monotonic`).

    The models (:meth:`model`, :meth:`cursor`, :attr:`context`) need an
    authenticated user; the first use opens a read-only transaction as
    that user, which lasts until :meth:`wait`, :meth:`release` or the end
    of the handler, whichever comes first; the next use opens a new one
    (that sees what was committed meanwhile). Records read in one
    transaction must not be used in the next: read them again. Use the
    models in the handler's own greenlet only.
    """

    def __init__(
        self,
        http: Request,
        *,
        database: str,
        identity: Identity | None,
        address: str | None,
        params: Mapping[str, Any],
        timeout: float,
        orm: ORM | None,
        started: float | None = None,
        broker: Broker = pubsub.LOCAL,
        host: Host | None = None,
    ) -> None:
        self.broker = broker
        self._host = host
        self.http = http
        self.database = database
        self.identity = identity
        self.uid = identity.uid if identity is not None else None
        self.login = identity.login if identity is not None else None
        self.address = address
        self.params = dict(params)
        self._timeout = timeout
        self.deadline = (time.monotonic() if started is None else started) + timeout
        self._orm = orm
        self._scope: contextlib.ExitStack | None = None
        self._transaction: Any = None
        self._owner: Any = None
        self._context: dict[str, Any] | None = None

    @property
    def environ(self) -> Mapping[str, Any]:
        return self.http.environ

    @property
    def method(self) -> str:
        return self.http.method

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    def get_timeout(self) -> float:
        """Seconds the handler may wait for news, in all."""
        return self._timeout

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once past)."""
        return self.deadline - time.monotonic()

    # -- the models -------------------------------------------------------

    @property
    def context(self) -> dict[str, Any]:
        """The user's context (language…, as Tryton's preferences give
        it), ``{}`` unless authenticated (or without trytond). The first
        read opens the transaction."""
        if self.identity is None or self._orm is None:
            return {}
        if self._context is None:
            self.transaction()
        assert self._context is not None
        return dict(self._context)

    def model(self, name: str) -> Any:
        """The Tryton model *name* (e.g. ``res.user``), usable with the
        user's access rights in the request's read-only transaction.

        :raises AuthenticationError: the request is not authenticated.
        :raises KeyError: no such model in the database.
        """
        self.transaction()
        return self._orm.models(self.database).get(name)  # type: ignore[union-attr]

    def cursor(self) -> Any:
        """A cursor of the request's read-only transaction, for SQL.

        :raises AuthenticationError: the request is not authenticated.
        """
        return self.transaction().connection.cursor()

    def transaction(self) -> Any:
        """The request's :class:`trytond.transaction.Transaction`, opened if
        needed.

        :raises AuthenticationError: the request is not authenticated.
        :raises PoolTimeout: every cursor stayed in use ``pool_timeout``
            seconds (the client gets ``503``).
        :raises DatabaseUnavailable: the database is out of reach
            (``503``).
        :raises RuntimeError: called from another greenlet than the one
            that opened it, or the server has no trytond configuration.
        """
        if self.identity is None:
            raise AuthenticationError("the models need an authenticated user")
        uid = self.identity.uid
        if not isinstance(uid, int):
            raise AuthenticationError("the models need a Tryton user")
        current = greenlet.getcurrent()
        if self._transaction is not None:
            if current is not self._owner:
                raise RuntimeError("use the models in the handler's greenlet only")
            return self._transaction
        if self._orm is None:
            raise RuntimeError("the models need the server's trytond_config")
        scope = contextlib.ExitStack()
        transaction = scope.enter_context(
            self._orm.transaction(
                self.database,
                uid,
                request=self._request_context(),
                statement_timeout=math.ceil(self._timeout),
            )
        )
        self._scope, self._transaction, self._owner = scope, transaction, current
        if self._context is None:
            self._context = {
                key: value
                for key, value in transaction.context.items()
                if not key.startswith("_")
            }
        return transaction

    def release(self) -> None:
        """End the transaction, if one is open: rolled back, its cursor
        free. Never raises (see :mod:`~oe_web_socketio.hosts.tryton.orm`)."""
        scope, self._scope, self._transaction, self._owner = (
            self._scope,
            None,
            None,
            None,
        )
        if scope is not None:
            scope.close()

    def _request_context(self) -> Mapping[str, Any] | None:
        """What the models are told of the request (for Tryton, trytond's
        ``_request`` context), as the host says."""
        if self._host is None:
            return None
        return self._host.request_context(self.environ, self.address)

    # -- waiting ----------------------------------------------------------

    def wait(self, waitable: Any, timeout: float | None = None) -> Any:
        """End the transaction (no cursor is held while waiting), then wait
        for *waitable*, at most *timeout* seconds and never beyond the
        deadline.

        *waitable* may be:

        * a gevent object (``Event``, ``AsyncResult``, ``Greenlet``…:
          anything :func:`gevent.wait` takes): the result is its value
          (``get()``) when it has one, else ``True``;
        * a callable taking the seconds it may wait: the result is what it
          returns; it raises :class:`TimeoutError` when the time is over;
        * an object with a ``wait(timeout)`` method returning whether it
          happened (:class:`threading.Event`): the result is ``True``.

        :raises PollTimeout: the time is over (uncaught, the client gets
            ``204 No Content``).
        """
        self.release()
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        if limit <= 0:
            raise PollTimeout("no news before the deadline")
        if hasattr(waitable, "rawlink"):
            import gevent

            if not gevent.wait([waitable], timeout=limit):
                raise PollTimeout(f"no news within {limit:.3g} s")
            getter = getattr(waitable, "get", None)
            return getter(block=False) if getter is not None else True
        if callable(waitable):
            try:
                return waitable(limit)
            except TimeoutError as exc:
                raise PollTimeout(f"no news within {limit:.3g} s") from exc
        if hasattr(waitable, "wait"):
            if not waitable.wait(limit):
                raise PollTimeout(f"no news within {limit:.3g} s")
            return True
        raise TypeError(f"cannot wait for {waitable!r}")

    def listen(
        self, channel: str, since: Any = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Wait for messages published in the database on *channel* (see
        :mod:`oe_web_socketio.outbox`): those after the position *since*
        the client saw last, at once if there are some, else the next one.
        Like :meth:`wait`, no cursor is held while waiting.

        :returns: ``[{"message", "channel", "position"}, …]``, in order;
            the client passes the last ``position`` back as *since*.
        :raises PollTimeout: nothing came in time (``204``).
        :raises DatabaseUnavailable: the server has no database bridge,
            or it is not connected (``503``).
        """
        broker, database = self.broker, self.database
        messages = self.wait(
            lambda seconds: broker.wait_messages(database, channel, since, seconds),
            timeout,
        )
        return [
            {"message": m.payload, "channel": m.channel, "position": m.token}
            for m in messages
        ]


# -- serving routes ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the endpoints of the routes need from the server.

    :ivar prefix: ``longpolling_path``.
    :ivar timeout: ``longpolling_timeout``.
    :ivar databases: the databases served; the first is the default.
    :ivar trusted_proxies: whose ``X-Forwarded-For`` is believed.
    :ivar max_body: the largest request body accepted, in bytes.
    :ivar orm: the host's models; ``None`` when it has none.
    :ivar broker: what delivers the database's messages
        (:mod:`oe_web_socketio.pubsub`).
    :ivar host: the host application, which authenticates the requests
        (:meth:`~oe_web_socketio.hosts.Host.authenticate_request`); by
        default a :class:`~oe_web_socketio.hosts.SessionHost` without
        authenticator: anonymous requests only.
    """

    prefix: str
    timeout: float
    databases: tuple[str, ...]
    trusted_proxies: tuple[str, ...] = ()
    max_body: int = 1_000_000
    orm: ORM | None = None
    broker: Broker = pubsub.LOCAL
    host: Host = dataclasses.field(default_factory=SessionHost)


class Endpoint:
    """Answers the requests of one route (see the module's docstring).

    :param spec: the route.
    :param settings: the server's settings.
    """

    #: Seconds the client is told to wait before it retries after a 503.
    retry_after = 5

    def __init__(self, spec: RouteSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.path = settings.prefix + spec.path
        try:
            self._signature: inspect.Signature | None = inspect.signature(spec.function)
        except (TypeError, ValueError):
            self._signature = None
        self._types = parameter_types(spec.function)

    @property
    def rule(self) -> str:
        """``myfunction:/longpolling/varroute/<var1>/<var2>``."""
        return f"{self.spec.name}:{self.path}"

    def __call__(self, http: Request) -> Response:
        started = time.monotonic()
        address = client_address(http.environ, self.settings.trusted_proxies)
        try:
            identity, database = self._authenticate(http, address)
        except AuthenticationError as exc:
            return self._unauthorized(str(exc))
        except DatabaseUnavailable as exc:
            return self._unavailable(http, exc)
        except HostError as exc:  # the host application's fault, logged
            return Response.json(
                {"error": str(exc)},
                HTTPStatus.INTERNAL_SERVER_ERROR,
                [("Cache-Control", "no-store")],
            )
        params = self._parameters(http)
        for name, kind in self._types.items():
            if name in params and name not in http.path_args:
                params[name] = convert(name, params[name], kind)
        if self._signature is not None:
            try:
                self._signature.bind(None, **params)
            except TypeError as exc:
                raise HTTPError(
                    HTTPStatus.BAD_REQUEST, f"bad parameters: {exc}"
                ) from None
        request = LongPollingRequest(
            http,
            database=database,
            identity=identity,
            address=address,
            params=params,
            timeout=self.settings.timeout,
            orm=self.settings.orm,
            started=started,
            broker=self.settings.broker,
            host=self.settings.host,
        )
        token = _current.set(request)
        try:
            result = self.spec.function(request, **params)
        except PollTimeout:
            return Response(
                HTTPStatus.NO_CONTENT, headers=(("Cache-Control", "no-store"),)
            )
        except AuthenticationError as exc:
            logger.info(
                "Refused %s %s from %s: %s", http.method, http.path, http.client, exc
            )
            return self._unauthorized(str(exc))
        except DatabaseUnavailable as exc:
            return self._unavailable(http, exc)
        finally:
            request.release()
            _current.reset(token)
        return self._render(result)

    # -- steps ------------------------------------------------------------

    def _parameters(self, http: Request) -> dict[str, Any]:
        """The keyword arguments of the handler: placeholders, query
        string, body.

        :raises HTTPError: a name given twice, a malformed or unsupported
            body.
        """
        params: dict[str, Any] = dict(http.path_args)
        sources = [
            ("the query string", _form(str(http.environ.get("QUERY_STRING") or "")))
        ]
        if http.method == "POST":
            sources.append(("the body", self._body(http)))
        for where, pairs in sources:
            for key, value in pairs:
                if key in params:
                    raise HTTPError(
                        HTTPStatus.BAD_REQUEST,
                        f"parameter {_shorten(key)!r} given twice (in {where})",
                    )
                params[key] = value
        return params

    def _body(self, http: Request) -> list[tuple[str, Any]]:
        body = http.body(self.settings.max_body)
        if not body.strip():
            return []
        content_type = (
            str(http.environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        )
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                # UnicodeDecodeError is a ValueError; RecursionError: nested
                # deeper than the interpreter's stack ("[" * 100000).
                raise HTTPError(HTTPStatus.BAD_REQUEST, "malformed JSON body") from None
            if not isinstance(data, dict):
                raise HTTPError(
                    HTTPStatus.BAD_REQUEST, "the JSON body must be an object"
                )
            return list(data.items())
        if content_type == "application/x-www-form-urlencoded":
            return _form(body.decode("latin-1"))
        raise HTTPError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/json or application/x-www-form-urlencoded",
        )

    def _authenticate(
        self, http: Request, address: str | None
    ) -> tuple[Identity | None, str]:
        """Who sends *http* from *address*, as the host says, and which
        database it reads: its user's, else the one it names (see
        :meth:`~oe_web_socketio.hosts.Host.named_database`), else the
        first served.

        :raises AuthenticationError: credentials are presented and refused
            (the host logged it), or none are while the route needs them.
        :raises DatabaseUnavailable: the credentials cannot be checked now.
        :raises HostError: the host application failed (logged).
        :raises HTTPError: ``400``: an anonymous request names a database
            that is not served.
        """
        host, databases = self.settings.host, self.settings.databases
        identity = host.authenticate_request(http.environ, address)
        if identity is not None:
            return identity, identity.db if identity.db is not None else databases[0]
        if self.spec.mustbeauthenticated:
            logger.info(
                "Refused %s %s from %s: no credentials",
                http.method,
                http.path,
                http.client,
            )
            raise AuthenticationError("authentication required")
        database = host.named_database(http.environ) or databases[0]
        if database not in databases:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST, f"unknown database {_shorten(database)!r}"
            )
        return None, database

    def _render(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        headers = (("Cache-Control", "no-store"),)
        if self.spec.mode == "json":
            return Response.json(result, headers=headers)
        if isinstance(result, str):
            return Response(HTTPStatus.OK, result.encode(), headers)
        if isinstance(result, bytes | bytearray):
            return Response(
                HTTPStatus.OK, bytes(result), headers, "application/octet-stream"
            )
        if result is None:
            return Response(HTTPStatus.OK, b"", headers)
        raise TypeError(
            f"{self.spec.name} returned {type(result).__name__}: an http route "
            "returns str, bytes or a Response"
        )

    @staticmethod
    def _unauthorized(reason: str) -> Response:
        return Response.json(
            {"error": reason},
            HTTPStatus.UNAUTHORIZED,
            [("WWW-Authenticate", "Session"), ("Cache-Control", "no-store")],
        )

    def _unavailable(self, http: Request, exc: DatabaseUnavailable) -> Response:
        logger.log(
            logging.WARNING if isinstance(exc, PoolTimeout) else logging.ERROR,
            "Cannot answer %s %s from %s: %s",
            http.method,
            http.path,
            http.client,
            exc,
        )
        return Response.json(
            {"error": "the database is busy or unavailable, try again later"},
            HTTPStatus.SERVICE_UNAVAILABLE,
            [("Retry-After", str(self.retry_after)), ("Cache-Control", "no-store")],
        )


#: The annotations of a handler's parameters that their values are
#: converted to (from the text of a query string or form) or checked
#: against (a JSON value).
SCALARS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class ParameterType:
    """What a handler's parameter takes: a scalar type, maybe ``None``."""

    type: type
    optional: bool = False


def parameter_types(function: Callable[..., Any]) -> dict[str, ParameterType]:
    """The parameters of *function* annotated with a scalar type
    (:data:`SCALARS`), or one ``| None``, by name; other annotations
    (none, ``Any``, lists, classes) are left alone."""
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError, AttributeError, SyntaxError):
        return {}  # annotations that do not resolve: the handler's business
    types = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        rest = [arg for arg in args if arg is not type(None)]
        optional = len(rest) < len(args)
        scalar = rest[0] if optional and len(rest) == 1 else hint
        if scalar in SCALARS and name != "return":
            types[name] = ParameterType(scalar, optional)
    return types


#: The words a query string says true or false with.
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
BOOLEANS.update({"0": False, "false": False, "no": False, "off": False, "": False})


def convert(name: str, value: Any, kind: ParameterType) -> Any:
    """*value* of the parameter *name* as its handler's annotation *kind*
    says: text (query string, form) is converted, a JSON value must be of
    the type already (an integer is a float too).

    :raises HTTPError: ``400`` naming the parameter and the type.
    """
    wanted = kind.type
    if value is None and kind.optional:
        return None
    if isinstance(value, str) and wanted is not str:
        text = value.strip()
        try:
            if wanted is bool:
                return BOOLEANS[text.lower()]
            if wanted is int and text.lstrip("+-").isdigit() and len(text) <= 30:
                return int(text)
            if wanted is float and len(text) <= 50:
                number = float(text)
                if math.isfinite(number):
                    return number
        except (KeyError, ValueError):
            pass
    elif isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
        return value
    elif wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    raise HTTPError(
        HTTPStatus.BAD_REQUEST,
        f"parameter {_shorten(name)!r} must be {words[wanted]}",
    )


def _form(text: str) -> list[tuple[str, str]]:
    """The pairs of a query string or form body (WSGI strings are Latin-1
    for the bytes received; names and values are UTF-8, raw or
    percent-encoded).

    :raises HTTPError: ``400`` for what is not UTF-8.
    """
    try:
        text = text.encode("latin-1").decode("utf-8")
        return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise HTTPError(HTTPStatus.BAD_REQUEST, "parameters are not UTF-8") from None


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def endpoints(specs: Iterable[RouteSpec], settings: Settings) -> list[Endpoint]:
    """The endpoints of *specs*, in order."""
    return [Endpoint(spec, settings) for spec in specs]


def add_routes(router: Router, endpoints_: Iterable[Endpoint]) -> None:
    """Add *endpoints_* to *router*, logging each rule.

    :raises DuplicateRouteError: a path is taken (by another route, or the
        same path declared by two registries).
    """
    for endpoint in endpoints_:
        router.add(Route(endpoint.path, endpoint, METHODS))
        logger.info("Add the rule: %r", endpoint.rule)


def load_routes(
    modules: Iterable[str] = (),
    *,
    entry_points: bool = True,
    registry: LongPolling = longpolling,
    group: str = ENTRY_POINT_GROUP,
) -> list[RouteSpec]:
    """Import the modules of the entry point *group* (if *entry_points*)
    and *modules*; return the routes of *registry*, then those of any
    other :class:`LongPolling` registry an entry point names.

    :raises RouteError: a module cannot be imported, or declares a route
        wrong.
    """
    registries = [registry]
    if entry_points:
        for entry_point in sorted(metadata.entry_points(group=group)):
            dist = entry_point.dist.name if entry_point.dist is not None else "?"
            origin = f"entry point {entry_point.name} = {entry_point.value} in {dist}"
            try:
                loaded = entry_point.load()
            except RouteError:
                raise
            except Exception as exc:
                raise RouteError(
                    None,
                    None,
                    f"cannot load the long-polling routes of {origin}: {exc}",
                ) from exc
            if isinstance(loaded, LongPolling):
                if loaded not in registries:
                    registries.append(loaded)
            elif not isinstance(loaded, types.ModuleType):
                raise RouteError(
                    None,
                    None,
                    f"{origin} is neither a module nor a LongPolling registry",
                )
    for name in modules:
        try:
            importlib.import_module(name)
        except RouteError:
            raise
        except Exception as exc:
            raise RouteError(
                None, None, f"cannot import the long-polling routes of {name!r}: {exc}"
            ) from exc
    return [spec for each in registries for spec in each.routes]


def serve_longpolling(
    router: Router,
    config: Config,
    host: Host | None,
    broker: Broker = pubsub.LOCAL,
) -> list[Endpoint]:
    """Serve on *router* the long-polling routes *config* asks for: those of
    the entry point group (unless ``load_entry_points`` is off) and of
    ``longpolling_modules``, authenticated by *host* (``None``: anonymous
    requests only). With routes, load the host's models
    (:meth:`~oe_web_socketio.hosts.Host.orm`; for Tryton,
    :class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`, warmed up in a
    greenlet). Run after :func:`oe_web_socketio.patch.patch`.

    :return: the endpoints served.
    :raises RouteError: a route cannot be loaded.
    :raises DuplicateRouteError: a path is taken.
    :raises ConfigError: the trytond configuration cannot be used.
    """
    specs = load_routes(
        config.longpolling_modules, entry_points=config.load_entry_points
    )
    if host is None:
        host = SessionHost()
    settings = Settings(
        prefix=config.longpolling_path,
        timeout=config.longpolling_timeout,
        databases=config.databases,
        trusted_proxies=config.trusted_proxies,
        max_body=config.longpolling_body_limit,
        orm=host.orm() if specs else None,
        broker=broker,
        host=host,
    )
    served = endpoints(specs, settings)
    add_routes(router, served)
    return served
