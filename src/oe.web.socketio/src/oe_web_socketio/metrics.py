"""Prometheus metrics of one server process: the route ``GET /metrics``.

Each worker answers for itself on its own port; Prometheus scrapes every
worker (one target each), and the sums over workers are the site's.
nginx does not route ``/metrics`` (it sends every path it does not name to
trytond), so the public never reaches it: the figures name databases and
count users, and a scrape walks every socket.

Invariants:

* one source per figure: a scrape reads what the parts already keep, the
  counters ``/health`` shows (:mod:`oe_web_socketio.health`: listeners,
  pools, bus, sessions), the dispatchers' counts of events received and
  refused (:class:`~oe_web_socketio.dispatcher.Dispatcher`), the server's
  count of emits (:class:`~oe_web_socketio.sockets.Server`) and its
  sockets; nothing is counted twice, and nothing here runs until a scrape;
* the only figure kept for Prometheus alone is the histogram of the
  delivery lag (:func:`lag_histogram`), which the outbox's broker observes
  once per message, after each batch is emitted, never per recipient;
* a scrape never yields between reading a figure and writing it out, so
  the answer is one moment's state; it costs a walk over the sockets of
  the process (a few milliseconds for ten thousand).

The names start with :data:`PREFIX`. Connections are counted by namespace
and transport (``websocket``, ``polling``), refusals by namespace and code
(the ``code`` a client is answered, see :mod:`oe_web_socketio.protocol`;
connections to a path nobody serves are ``unknown_namespace`` of the
namespace ``*``). The process's memory, CPU and open files come from
prometheus_client's process collector (``process_*``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oe_web_socketio import protocol
from oe_web_socketio.routing import READ_METHODS, Request, Response, Route

if TYPE_CHECKING:
    from oe_web_socketio.sockets import Server, SocketIO

#: The path of the route.
PATH = "/metrics"

#: The prefix of every metric of this module.
PREFIX = "oe_socketio"

#: Upper bounds of the delivery lag's buckets, in seconds: a message on
#: time is delivered within milliseconds; seconds mean a listener catching
#: up after a reconnection, or a server behind its database.
LAG_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)

#: The code of a connection to a path nobody serves
#: (:class:`~oe_web_socketio.dispatcher.UnknownNamespace`).
UNKNOWN_NAMESPACE = protocol.UNKNOWN_NAMESPACE


def lag_histogram() -> Histogram:
    """The histogram of the seconds from a message's row in the outbox
    (its ``create_date``, by the database's clock) to its delivery, by
    database: the commit-to-delivery lag for the short transactions that
    publish. Not registered: :class:`Collector` reports it."""
    return Histogram(
        f"{PREFIX}_delivery_lag_seconds",
        "Seconds from a message's row in the outbox to its delivery",
        ["database"],
        buckets=LAG_BUCKETS,
        registry=None,
    )


class Collector:
    """Reads the figures of the parts of one server when Prometheus scrapes.

    :param server: the Socket.IO server (its sockets and emits).
    :param socketio: its namespaces (their dispatchers' counts).
    :param count_clients: the number of clients connected (as ``/health``).
    :param counters: the counters ``/health`` shows, by name.
    :param broker: the name of the broker's kind (``OutboxBroker``…).
    :param lag: the delivery lag histogram the broker observes, if any.
    """

    def __init__(
        self,
        *,
        server: Server,
        socketio: SocketIO,
        count_clients: Callable[[], int],
        counters: Mapping[str, Callable[[], Any]],
        broker: str,
        lag: Histogram | None = None,
    ) -> None:
        self.server = server
        self.socketio = socketio
        self.count_clients = count_clients
        self.counters = dict(counters)
        self.broker = broker
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        """Every metric, read now."""
        yield from self._sockets()
        yield from self._events()
        info = InfoMetricFamily(f"{PREFIX}_broker", "The broker that delivers messages")
        info.add_metric([], {"broker": self.broker})
        yield info
        for name, count in self.counters.items():
            yield from _translate(name, count())
        if self.lag is not None:
            yield from self.lag.collect()

    def _sockets(self) -> Iterator[Metric]:
        clients = GaugeMetricFamily(
            f"{PREFIX}_clients", "Clients connected to at least one namespace"
        )
        clients.add_metric([], self.count_clients())
        yield clients
        connections = GaugeMetricFamily(
            f"{PREFIX}_connections",
            "Sockets connected, by namespace and transport",
            labels=["namespace", "transport"],
        )
        manager = self.server.manager
        sessions = self.server.eio.sockets
        for namespace in list(manager.get_namespaces()):
            counts: Counter[str] = Counter({"websocket": 0, "polling": 0})
            for sid, eio_sid in manager.get_participants(namespace, None):
                session = sessions.get(eio_sid)
                if session is not None and manager.is_connected(sid, namespace):
                    counts["websocket" if session.upgraded else "polling"] += 1
            for transport, count in counts.items():
                connections.add_metric([namespace, transport], count)
        yield connections
        sessions_gauge = GaugeMetricFamily(
            f"{PREFIX}_engineio_sessions", "Engine.IO sessions open"
        )
        sessions_gauge.add_metric([], len(sessions))
        yield sessions_gauge

    def _events(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            f"{PREFIX}_events_received",
            "Events received from clients, by namespace",
            labels=["namespace"],
        )
        refused = CounterMetricFamily(
            f"{PREFIX}_refusals",
            "Connections and events refused, and events answered with an "
            "error, by namespace and code",
            labels=["namespace", "code"],
        )
        for path, dispatcher in list(self.socketio.dispatchers.items()):
            received.add_metric([path], dispatcher.received)
            for code, count in list(dispatcher.refused.items()):
                refused.add_metric([path, code], count)
        refused.add_metric(["*", UNKNOWN_NAMESPACE], self.socketio.unknown.refused)
        yield received
        yield refused
        emitted = CounterMetricFamily(
            f"{PREFIX}_emits",
            "Emits of this process by namespace: one per call, whatever the "
            "number of recipients",
            labels=["namespace"],
        )
        for path, count in list(self.server.emitted.items()):
            emitted.add_metric([path], count)
        yield emitted


def _translate(name: str, value: Any) -> Iterable[Metric]:
    """The metrics of the ``/health`` counter *name*, whose value is
    *value*; a counter this module does not know is a gauge if it is a
    number, and left out otherwise."""
    per_database = _PER_DATABASE.get(name)
    if per_database is not None and isinstance(value, Mapping):
        families = {
            key: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                f"{PREFIX}_{metric}", text, labels=["database"]
            )
            for key, (metric, kind, text) in per_database.items()
        }
        for database, figures in value.items():
            for key, family in families.items():
                figure = figures.get(key) if isinstance(figures, Mapping) else None
                if key == "state" and figure is not None:
                    family.add_metric([database], 1 if figure == "listening" else 0)
                elif isinstance(figure, int | float) and not isinstance(figure, bool):
                    family.add_metric([database], figure)
        yield from families.values()
    elif name == "sessions" and isinstance(value, Mapping):
        ended = CounterMetricFamily(
            f"{PREFIX}_sessions_ended",
            "Sockets disconnected because their session no longer held",
        )
        ended.add_metric([], value.get("ended", 0))
        yield ended
    elif isinstance(value, int | float) and not isinstance(value, bool):
        gauge = GaugeMetricFamily(f"{PREFIX}_{name}", f"/health's {name}")
        gauge.add_metric([], value)
        yield gauge


#: The ``/health`` counters whose value is a mapping by database: for each
#: key of a database's figures, the metric's name, kind and help.
_PER_DATABASE: dict[str, dict[str, tuple[str, str, str]]] = {
    "listeners": {
        "state": (
            "listener_up",
            "gauge",
            "1 if the database's listener is listening, else 0",
        ),
        "failures": (
            "listener_failures",
            "counter",
            "Times the database's listener lost or failed its connection",
        ),
        "delivered": (
            "broker_position",
            "gauge",
            "Position of the last message delivered",
        ),
        "messages": (
            "messages_delivered",
            "counter",
            "Messages delivered (each to all its recipients)",
        ),
    },
    "local": {
        "delivered": (
            "messages_delivered",
            "counter",
            "Messages delivered (each to all its recipients)",
        ),
        "kept": ("history_kept", "gauge", "Messages kept for replay"),
    },
    "bus": {
        "polls": ("bus_polls_held", "gauge", "Tryton bus polls held open"),
        "messages": ("bus_messages_cached", "gauge", "Tryton bus messages cached"),
        "dropped": (
            "bus_messages_dropped",
            "counter",
            "Tryton bus messages dropped to keep within the cache's size",
        ),
    },
    "pools": {
        "in_use": ("pool_in_use", "gauge", "Read-only cursors in use"),
        "idle": ("pool_idle", "gauge", "Read-only connections idle"),
        "waiting": ("pool_waiting", "gauge", "Callers waiting for a cursor"),
    },
}


def registry(collector: Collector) -> CollectorRegistry:
    """A registry of *collector* and of the process's figures (memory,
    CPU, open files, garbage collection, Python version)."""
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Metrics:
    """Endpoint answering the metrics of *registry* in Prometheus's text
    format, never cached."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, request: Request) -> Response:
        return Response(
            HTTPStatus.OK,
            generate_latest(self.registry),
            (("Cache-Control", "no-store"),),
            CONTENT_TYPE_LATEST,
        )


def metrics_route(registry: CollectorRegistry) -> Route:
    """The ``/metrics`` route, for ``GET`` and ``HEAD``."""
    return Route(PATH, Metrics(registry), READ_METHODS)
