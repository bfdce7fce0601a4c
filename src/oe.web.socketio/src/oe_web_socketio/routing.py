"""Plain HTTP routes served beside Socket.IO.

A :class:`Router` is a WSGI application that maps a path to a
:class:`Route`; a route's endpoint takes a :class:`Request` and returns a
:class:`Response`, and never talks WSGI itself. Matching is werkzeug's
(:class:`werkzeug.routing.Map`): a route path may hold placeholders, such
as ``/<database>/bus`` or ``/x/<int:n>``, whose values reach the endpoint
as :attr:`Request.path_args`. Invariants of every answer of a
:class:`Router`:

* it has ``Content-Type`` and ``Content-Length``;
* a ``HEAD`` answer has the headers of the ``GET`` answer and no body;
* an unknown path gets ``404`` and a known path with a method the route
  does not accept gets ``405`` with ``Allow``, both with a JSON body
  ``{"error": ...}``; paths match exactly: no redirect to add or remove a
  slash, ever;
* an endpoint refuses a bad request by raising :class:`HTTPError`: the
  client gets its status and message as ``{"error": ...}`` and one line
  is logged (level WARNING) with the client's address;
* any other exception raised by an endpoint is an internal fault: it is
  logged with the request and answered with ``500``, the client learns
  nothing more.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from oe_web_socketio.exceptions import DuplicateRouteError, HTTPError

logger = logging.getLogger(__name__)

#: Methods a route accepts unless told otherwise.
READ_METHODS = frozenset({"GET", "HEAD"})

#: The environ key where :meth:`Request.body` keeps the body it read.
BODY_KEY = "oe_web_socketio.body"

#: Most digits of a ``Content-Length`` read as a number: more is refused
#: as too large before ``int()`` (which refuses thousands of digits).
MAX_LENGTH_DIGITS = 18


@dataclasses.dataclass(frozen=True)
class Request:
    """An HTTP request, as the WSGI environ of the server describes it.

    :ivar environ: the WSGI environ.
    :ivar path_args: the values of the placeholders of the route's path,
        by name (empty for a path without any).
    """

    environ: Mapping[str, Any]
    path_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.environ["REQUEST_METHOD"]).upper()

    @property
    def path(self) -> str:
        """The path, decoded as UTF-8 (WSGI gives it as Latin-1)."""
        path = str(self.environ.get("PATH_INFO") or "/")
        try:
            return path.encode("latin-1").decode("utf-8", "replace")
        except UnicodeEncodeError:
            # Not a PEP 3333 server: the path is text already.
            return path

    @property
    def client(self) -> str:
        """The address of the peer (the proxy, when there is one)."""
        return str(self.environ.get("REMOTE_ADDR", "-"))

    def body(self, limit: int) -> bytes:
        """The body of the request, whole.

        Read once: later calls return the same bytes. A body larger than
        *limit* is not read (gevent's server discards it after the
        answer).

        :param limit: the most bytes accepted.
        :raises HTTPError: ``413`` when the body is larger than *limit*,
            ``400`` when ``Content-Length`` is not a number or the body
            cannot be read whole (the client left, broken chunks).
        """
        cached = self.environ.get(BODY_KEY)
        if cached is not None:
            return bytes(cached)
        header = str(self.environ.get("CONTENT_LENGTH") or "").strip()
        length: int | None = None
        if header:
            if not (header.isascii() and header.isdigit()):
                raise HTTPError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            if len(header) > MAX_LENGTH_DIGITS or int(header) > limit:
                raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            length = int(header)
        stream = self.environ.get("wsgi.input")
        body = b""
        if stream is not None and length != 0:
            # Without Content-Length the body is chunked (or empty): read
            # one byte more than allowed to tell "too large".
            try:
                body = stream.read(limit + 1 if length is None else length)
            except (OSError, ValueError):
                raise HTTPError(
                    HTTPStatus.BAD_REQUEST, "cannot read the request body"
                ) from None
            if length is None and len(body) > limit:
                raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            if length is not None and len(body) < length:
                raise HTTPError(HTTPStatus.BAD_REQUEST, "incomplete request body")
        if isinstance(self.environ, MutableMapping):
            self.environ[BODY_KEY] = body
        return body


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

    :ivar path: the path of the route, a werkzeug rule: literal text and
        placeholders ``<name>`` (one path segment) or ``<converter:name>``
        (werkzeug's converters: ``int``, ``path``, ``uuid``, ...).
    :ivar endpoint: called with the :class:`Request`, returns the answer.
    :ivar methods: the accepted methods, upper case.
    """

    path: str
    endpoint: Endpoint
    methods: frozenset[str] = READ_METHODS


#: A placeholder of a werkzeug rule: ``<name>`` or ``<converter(args):name>``.
_PLACEHOLDER = re.compile(r"<(?:([^>:]+):)?[^>:]+>")


def _shape(path: str) -> str:
    """*path* with the names of its placeholders left out."""

    def converter(match: re.Match[str]) -> str:
        # "string" is the name of werkzeug's default converter.
        name = match.group(1) or "default"
        return "<default>" if name == "string" else f"<{name}>"

    return _PLACEHOLDER.sub(converter, path)


class Router:
    """A WSGI application dispatching requests to routes by path."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: dict[str, Route] = {}
        # Exact paths: no redirect for a missing or extra slash, no
        # merging of slashes.
        self._map = Map(strict_slashes=True, merge_slashes=False)
        self._adapter = self._map.bind("localhost")
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        """Add *route*.

        :raises DuplicateRouteError: another route has the same path.
        :raises ValueError: the path is not a valid werkzeug rule (it must
            start with ``/``).
        """
        shape = _shape(route.path)
        existing = self._routes.get(shape)
        if existing is not None:
            raise DuplicateRouteError(existing, route)
        # The endpoint werkzeug knows is the shape: a route need not be
        # hashable.
        self._map.add(Rule(route.path, endpoint=shape, methods=sorted(route.methods)))
        self._routes[shape] = route

    def serves(self, path: str) -> bool:
        """Whether a route of this router has *path* (for any method)."""
        if path.startswith("//"):
            return False
        try:
            self._adapter.match(path, "GET")
        except MethodNotAllowed:
            return True
        except (NotFound, RequestRedirect):
            return False
        return True

    def dispatch(self, request: Request) -> Response:
        """Return the answer to *request*."""
        path = request.path
        if path.startswith("//"):
            # werkzeug would strip the extra slashes: not an exact match.
            return Response.json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        try:
            shape, args = self._adapter.match(path, request.method)
        except (NotFound, RequestRedirect):
            return Response.json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        except MethodNotAllowed as exc:
            return method_not_allowed(exc.valid_methods or ())
        route = self._routes[shape]
        request = dataclasses.replace(request, path_args=args)
        try:
            response: Response = route.endpoint(request)
            return response
        except HTTPError as exc:
            logger.warning(
                "Refused %s %s from %s: %s",
                request.method,
                request.path,
                request.client,
                exc,
            )
            return Response.json({"error": exc.reason}, exc.status)
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
        return send(self.dispatch(Request(environ)), environ, start_response)


def method_not_allowed(methods: Iterable[str]) -> Response:
    """The ``405`` answer naming the accepted *methods* in ``Allow``."""
    return Response.json(
        {"error": "method not allowed"},
        HTTPStatus.METHOD_NOT_ALLOWED,
        [("Allow", ", ".join(sorted(methods)))],
    )


def send(
    response: Response, environ: Mapping[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """Answer the WSGI request of *environ* with *response* (no body to
    a ``HEAD``)."""
    status = f"{response.status.value} {response.status.phrase}"
    start_response(status, response.wsgi_headers())
    if str(environ.get("REQUEST_METHOD", "")).upper() == "HEAD":
        return []
    return [response.body]
