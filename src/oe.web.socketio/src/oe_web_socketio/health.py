"""The ``GET /health`` route: is the server up, and what does it serve.

The answer is JSON::

    {"status": "ok", "version": "0.1.0", "worker": "w0", "databases": ["oe"],
     "clients": 3, "greenlets": 0}

where ``worker`` names the process among the workers behind one proxy
(:attr:`Config.worker <oe_web_socketio.config.Config.worker>`; ``null``
for a lone server), so that ``/health`` through the proxy says which
worker answered, ``clients`` is the number of Socket.IO clients connected right now,
and the keys after it are counters the wiring adds (``greenlets``: those
owned by sockets, see :meth:`oe_web_socketio.sockets.SocketIO.count_greenlets`).
This module knows nothing of Socket.IO: the counts come from callables
given by the wiring (:mod:`oe_web_socketio.app`). The answer must never be
cached, so it says ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from oe_web_socketio.routing import READ_METHODS, Request, Response, Route

#: The path of the route.
PATH = "/health"


class Health:
    """Endpoint answering the health of the server.

    :param version: the version of the server.
    :param databases: the names of the databases served.
    :param worker: the name of this worker, or ``None``.
    :param count_clients: returns the number of connected clients.
    :param counters: more counts to report, by key.
    """

    def __init__(
        self,
        *,
        version: str,
        databases: Sequence[str],
        count_clients: Callable[[], int],
        counters: Mapping[str, Callable[[], object]] | None = None,
        worker: str | None = None,
    ) -> None:
        self.version = version
        self.worker = worker
        self.databases = tuple(databases)
        self.count_clients = count_clients
        self.counters = dict(counters or {})

    def __call__(self, request: Request) -> Response:
        return Response.json(
            {
                "status": "ok",
                "version": self.version,
                "worker": self.worker,
                "databases": list(self.databases),
                "clients": self.count_clients(),
                **{key: count() for key, count in self.counters.items()},
            },
            headers=[("Cache-Control", "no-store")],
        )


def health_route(
    *,
    version: str,
    databases: Sequence[str],
    count_clients: Callable[[], int],
    counters: Mapping[str, Callable[[], object]] | None = None,
    worker: str | None = None,
) -> Route:
    """The ``/health`` route, for ``GET`` and ``HEAD``."""
    endpoint = Health(
        version=version,
        worker=worker,
        databases=databases,
        count_clients=count_clients,
        counters=counters,
    )
    return Route(PATH, endpoint, READ_METHODS)
