"""Serving the routes: an :class:`Endpoint` per route answers its requests
(authentication through the host, parameters, the handler's call in its
transaction, the answer), with the server's :class:`Settings`.

Invariant: a handler's transaction ends (rolled back, its cursor free)
before its answer is sent, whatever the handler did; every refusal is one
log line at most and an answer with a reason, never a traceback but for a
handler's own fault.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from oe_web_socketio import pubsub
from oe_web_socketio.auth import Identity, client_address
from oe_web_socketio.exceptions import (
    AuthenticationError,
    DatabaseUnavailable,
    HostError,
    HTTPError,
    PollTimeout,
    PoolTimeout,
)
from oe_web_socketio.hosts import Host, SessionHost
from oe_web_socketio.longpolling.parameters import (
    convert,
    form_pairs,
    parameter_types,
    shorten,
)
from oe_web_socketio.longpolling.registry import RouteSpec
from oe_web_socketio.longpolling.request import ORM, LongPollingRequest, current
from oe_web_socketio.routing import Request, Response, Route, Router

if TYPE_CHECKING:
    from oe_web_socketio.pubsub import Broker

logger = logging.getLogger("oe_web_socketio.longpolling")

#: Methods every route accepts (and HEAD, which werkzeug adds to GET).
METHODS = frozenset({"GET", "POST"})


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
    broker: Broker = pubsub.NULL
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
        token = current.set(request)
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
            current.reset(token)
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
            (
                "the query string",
                form_pairs(str(http.environ.get("QUERY_STRING") or "")),
            )
        ]
        if http.method == "POST":
            sources.append(("the body", self._body(http)))
        for where, pairs in sources:
            for key, value in pairs:
                if key in params:
                    raise HTTPError(
                        HTTPStatus.BAD_REQUEST,
                        f"parameter {shorten(key)!r} given twice (in {where})",
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
            return form_pairs(body.decode("latin-1"))
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
                HTTPStatus.BAD_REQUEST, f"unknown database {shorten(database)!r}"
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
