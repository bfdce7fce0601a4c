"""The Tryton host: the :class:`~oe_web_socketio.hosts.Host` of Tryton.

:class:`TrytonHost` gathers what the server needs of Tryton, each in a
module of this package: what trytond's configuration says
(:mod:`~oe_web_socketio.hosts.tryton.settings`, read once), sessions of
``ir_session`` checked read-only (:mod:`~oe_web_socketio.hosts.tryton.sessions`)
on cursor pools of trytond's databases, Tryton's bus served as a route of
its own (:mod:`~oe_web_socketio.hosts.tryton.bus`, fed by the ``NOTIFY``
of channel ``bus``), and trytond's models
(:mod:`~oe_web_socketio.hosts.tryton.orm`, loaded only when long-polling
routes need them).

This module never imports trytond (only :meth:`TrytonHost.orm` does), nor
gevent or psycopg_pool at import: the host is built after gevent's patch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from oe_web_socketio.auth import Identity
from oe_web_socketio.config import Config
from oe_web_socketio.hosts.tryton.sessions import (
    ADMINISTRATOR_QUERY,
    TrytonAuthenticator,
    TrytonSessions,
)
from oe_web_socketio.hosts.tryton.settings import TrytonSettings

if TYPE_CHECKING:
    # Not at run time: importing psycopg_pool before gevent's patch would
    # keep blocking primitives; settings are read before it.
    from oe_web_socketio.hosts.tryton.bus import TrytonBus
    from oe_web_socketio.hosts.tryton.orm import TrytonORM
    from oe_web_socketio.pool import CursorPools
    from oe_web_socketio.routing import Route

#: The notification channel of Tryton's bus (trytond's ``Bus._channel``).
BUS_CHANNEL = "bus"


class TrytonHost(TrytonSessions):
    """The Tryton host: sessions of ``ir_session`` checked read-only,
    read-only cursors on trytond's databases, Tryton's bus, trytond's
    models.

    :param config: the server's settings (databases, ``max_cursor`` for
        the cursor pools, ``longpolling_transactions`` for the models,
        ``pool_timeout``, ``trytond_config``, the bus's timeouts).
    :param settings: what trytond's configuration says.

    Build it after :func:`oe_web_socketio.patch.patch`: it opens the
    cursor pools (psycopg_pool takes its locks at import time).

    :ivar bus: Tryton's bus (:class:`~oe_web_socketio.hosts.tryton.bus.TrytonBus`),
        contributed as the route ``POST /<database>/bus``, the consumer of
        the notifications of channel :data:`BUS_CHANNEL` and the counter
        ``bus`` of ``/health``.
    """

    name = "tryton"

    def __init__(self, config: Config, settings: TrytonSettings) -> None:
        from oe_web_socketio.hosts.tryton.bus import TrytonBus
        from oe_web_socketio.pool import CursorPools

        self.config = config
        self.settings = settings
        self.pools: CursorPools = CursorPools(
            settings.conninfo, config.max_cursor, config.pool_timeout
        )
        self.authenticator: TrytonAuthenticator = TrytonAuthenticator(
            self.pools, settings, config.databases, config.databases[0]
        )
        self.bus: TrytonBus = TrytonBus(
            config, self.authenticator, allow_subscribe=settings.allow_subscribe
        )

    @classmethod
    def from_config(cls, config: Config) -> TrytonHost | None:
        """The Tryton host of *config*, or ``None`` when it names no
        trytond configuration (``trytond_config``).

        :raises ConfigError: the trytond configuration cannot be read.
        """
        if config.trytond_config is None:
            return None
        return cls(config, TrytonSettings.from_config_file(config.trytond_config))

    def conninfo(self, database: str) -> str:
        return self.settings.conninfo(database)

    def routes(self) -> Iterable[Route]:
        """The bus's ``POST /<database>/bus``."""
        return (self.bus.route(),)

    def consumers(self) -> Mapping[str, Callable[[str, str], None]]:
        """The bus's cache, fed by trytond's ``NOTIFY "bus"``."""
        return {BUS_CHANNEL: self.bus.notify}

    def administers(self, identity: Identity) -> bool:
        """Whether *identity*'s user is in Tryton's group "Administration"
        (:data:`~oe_web_socketio.hosts.tryton.sessions.ADMINISTRATOR_QUERY`),
        read now, read-only.

        :raises DatabaseUnavailable: its database cannot be queried now.
        """
        if identity.db is None or not isinstance(identity.uid, int):
            return False
        with self.pools.cursor(identity.db) as cursor:
            cursor.execute(ADMINISTRATOR_QUERY, {"uid": identity.uid})
            row = cursor.fetchone()
        return bool(row and row[0])

    def counters(self) -> Mapping[str, Callable[[], Any]]:
        """The pools' cursors, and the bus's polls and cached messages,
        by database."""
        return {**super().counters(), "bus": self.bus.stats}

    def close(self) -> None:
        """Answer the bus's held polls, then close the cursor pools."""
        self.bus.close()
        super().close()

    def orm(self) -> TrytonORM:
        """Import trytond, load its models and warm them up in a greenlet
        (see :class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`), at most
        :attr:`Config.orm_transactions <oe_web_socketio.config.Config.orm_transactions>`
        transactions at once per database.

        :raises ConfigError: the trytond configuration cannot be used.
        """
        import gevent

        from oe_web_socketio.hosts.tryton.orm import TrytonORM

        assert self.config.trytond_config is not None
        orm = TrytonORM(
            self.config.trytond_config,
            self.config.databases,
            self.config.orm_transactions,
            self.config.pool_timeout,
        )
        orm.load()
        gevent.spawn(orm.warm_up)
        return orm
