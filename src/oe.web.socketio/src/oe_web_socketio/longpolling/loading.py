"""Loading the routes and serving them: the modules of the entry point group
:data:`ENTRY_POINT_GROUP` and of ``longpolling_modules``
(:func:`load_routes`), and the wiring of the application
(:func:`serve_longpolling`), which asks the host for its models.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterable
from importlib import metadata
from typing import TYPE_CHECKING

from oe_web_socketio import pubsub
from oe_web_socketio.exceptions import RouteError
from oe_web_socketio.hosts import Host, SessionHost
from oe_web_socketio.longpolling.endpoint import (
    Endpoint,
    Settings,
    add_routes,
    endpoints,
)
from oe_web_socketio.longpolling.registry import LongPolling, RouteSpec, longpolling
from oe_web_socketio.routing import Router

if TYPE_CHECKING:
    from oe_web_socketio.config import Config
    from oe_web_socketio.pubsub import Broker


#: The entry point group of modules (or :class:`LongPolling` registries)
#: that declare long-polling routes.
ENTRY_POINT_GROUP = "oe_web_socketio.longpolling"


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


def longpolling_endpoints(
    config: Config,
    host: Host | None,
    broker: Broker = pubsub.NULL,
) -> list[Endpoint]:
    """The endpoints of the long-polling routes *config* asks for: those of
    the entry point group (unless ``load_entry_points`` is off) and of
    ``longpolling_modules``, authenticated by *host* (``None``: anonymous
    requests only). With routes, load the host's models
    (:meth:`~oe_web_socketio.hosts.Host.orm`; for Tryton,
    :class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`, warmed up in a
    greenlet). Run after :func:`oe_web_socketio.patch.patch`.

    :raises RouteError: a route cannot be loaded.
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
    return endpoints(specs, settings)


def serve_longpolling(
    router: Router,
    config: Config,
    host: Host | None,
    broker: Broker = pubsub.NULL,
) -> list[Endpoint]:
    """Serve on *router* the endpoints of :func:`longpolling_endpoints`.

    :return: the endpoints served.
    :raises RouteError: a route cannot be loaded.
    :raises DuplicateRouteError: a path is taken.
    :raises ConfigError: the trytond configuration cannot be used.
    """
    served = longpolling_endpoints(config, host, broker)
    add_routes(router, served)
    return served
