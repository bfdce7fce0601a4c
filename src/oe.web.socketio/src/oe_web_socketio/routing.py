"""Plain HTTP routes served beside Socket.IO.

A :class:`Router` is a WSGI application that maps a path to a
:class:`Route`; a route's endpoint takes a :class:`Request` and returns a
:class:`Response`, and never talks WSGI itself. Invariants of every answer
of a :class:`Router`:

* it has ``Content-Type`` and ``Content-Length``;
* a ``HEAD`` answer has the headers of the ``GET`` answer and no body;
* an unknown path gets ``404`` and a known path with a method the route
  does not accept gets ``405`` with ``Allow``, both with a JSON body
  ``{"error": ...}``;
* an exception raised by an endpoint is an internal fault: it is logged
  with the request and answered with ``500``, the client learns nothing
  more.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from oe_web_socketio.exceptions import OeWebSocketIOError

logger = logging.getLogger(__name__)

#: Methods a route accepts unless told otherwise.
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclasses.dataclass(frozen=True)
class Request:
    """An HTTP request, as the WSGI environ of the server describes it."""

    environ: Mapping[str, Any]

    @property
    def method(self) -> str:
        return str(self.environ["REQUEST_METHOD"]).upper()

    @property
    def path(self) -> str:
        return str(self.environ.get("PATH_INFO") or "/")

    @property
    def client(self) -> str:
        """The address of the peer (the proxy, when there is one)."""
        return str(self.environ.get("REMOTE_ADDR", "-"))


@dataclasses.dataclass(frozen=True)
class Response:
    """An HTTP answer: a status, headers and a body."""

    status: HTTPStatus
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def json(
        cls,
        data: Any,
        status: HTTPStatus = HTTPStatus.OK,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """A response whose body is *data* encoded as JSON."""
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status, body, tuple(headers), "application/json")

    def wsgi_headers(self) -> list[tuple[str, str]]:
        """The headers to send, ``Content-Type`` and ``Content-Length`` first."""
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            *self.headers,
        ]


Endpoint = Callable[[Request], Response]


@dataclasses.dataclass(frozen=True)
class Route:
    """A path answered by an endpoint for some methods.

    :ivar path: the exact path (``PATH_INFO``) of the route.
    :ivar endpoint: called with the :class:`Request`, returns the answer.
    :ivar methods: the accepted methods, upper case.
    """

    path: str
    endpoint: Endpoint
    methods: frozenset[str] = READ_METHODS


class DuplicateRouteError(OeWebSocketIOError, ValueError):
    """Two routes claim the same path.

    :ivar existing: the route already in the router.
    :ivar duplicate: the route refused.
    """

    def __init__(self, existing: Route, duplicate: Route) -> None:
        self.existing = existing
        self.duplicate = duplicate
        super().__init__(existing, duplicate)

    def __str__(self) -> str:
        return (
            f"path {self.duplicate.path!r} already routed to {self.existing.endpoint!r}"
        )


class Router:
    """A WSGI application dispatching requests to routes by exact path."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: dict[str, Route] = {}
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        """Add *route*.

        :raises DuplicateRouteError: another route has the same path.
        """
        existing = self._routes.get(route.path)
        if existing is not None:
            raise DuplicateRouteError(existing, route)
        self._routes[route.path] = route

    def dispatch(self, request: Request) -> Response:
        """Return the answer to *request*."""
        route = self._routes.get(request.path)
        if route is None:
            return Response.json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            return Response.json(
                {"error": "method not allowed"},
                HTTPStatus.METHOD_NOT_ALLOWED,
                [("Allow", allow)],
            )
        try:
            return route.endpoint(request)
        except Exception:
            logger.exception(
                "Internal error answering %s %s from %s",
                request.method,
                request.path,
                request.client,
            )
            return Response.json(
                {"error": "internal server error"},
                HTTPStatus.INTERNAL_SERVER_ERROR,
            )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        status = f"{response.status.value} {response.status.phrase}"
        start_response(status, response.wsgi_headers())
        if request.method == "HEAD":
            return []
        return [response.body]
