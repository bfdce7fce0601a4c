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

Importing this package imports neither gevent's patch nor trytond: the
models come from the host (for Tryton
:class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`), which the wiring
(:func:`serve_longpolling`) asks for after the patch.

The package, one job per module: :mod:`~.registry` (routes as declared),
:mod:`~.request` (what a handler gets: the request, its transaction, its
waits), :mod:`~.parameters` (a handler's parameters and their types),
:mod:`~.endpoint` (answering a route's requests), :mod:`~.loading` (the
modules that declare routes, and the wiring). Every name is imported from
here, as from the module this package replaces.
"""

from __future__ import annotations

from http import HTTPStatus

from oe_web_socketio.exceptions import PollTimeout, RouteError
from oe_web_socketio.longpolling.endpoint import (
    METHODS,
    Endpoint,
    Settings,
    add_routes,
    endpoints,
)
from oe_web_socketio.longpolling.loading import (
    ENTRY_POINT_GROUP,
    load_routes,
    longpolling_endpoints,
    serve_longpolling,
)
from oe_web_socketio.longpolling.parameters import (
    BOOLEANS,
    SCALARS,
    ParameterType,
    convert,
    parameter_types,
)
from oe_web_socketio.longpolling.registry import (
    MODES,
    LongPolling,
    RouteSpec,
    check_handler,
    check_route_arguments,
    longpolling,
    placeholders,
)
from oe_web_socketio.longpolling.request import (
    ORM,
    LongPollingRequest,
    get_timeout,
)

__all__ = [
    "BOOLEANS",
    "ENTRY_POINT_GROUP",
    "METHODS",
    "MODES",
    "ORM",
    "SCALARS",
    "Endpoint",
    "HTTPStatus",
    "LongPolling",
    "LongPollingRequest",
    "ParameterType",
    "PollTimeout",
    "RouteError",
    "RouteSpec",
    "Settings",
    "add_routes",
    "check_handler",
    "check_route_arguments",
    "convert",
    "endpoints",
    "get_timeout",
    "load_routes",
    "longpolling",
    "longpolling_endpoints",
    "parameter_types",
    "placeholders",
    "serve_longpolling",
]
