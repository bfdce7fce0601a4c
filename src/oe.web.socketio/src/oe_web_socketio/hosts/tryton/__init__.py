"""Everything Tryton, behind :class:`~oe_web_socketio.hosts.Host`.

One module per concern, each with one job:

* :mod:`~oe_web_socketio.hosts.tryton.settings`: the one read of
  trytond's configuration file (:class:`TrytonSettings`);
* :mod:`~oe_web_socketio.hosts.tryton.sessions`: Tryton's sessions of
  ``ir_session``, checked read-only (:class:`TrytonAuthenticator`), the
  header ``X-Tryton-Database`` and trytond's request context
  (:class:`TrytonSessions`);
* :mod:`~oe_web_socketio.hosts.tryton.bus`: Tryton's bus,
  ``POST /<database>/bus``;
* :mod:`~oe_web_socketio.hosts.tryton.orm`: trytond's models in
  read-only transactions (the only module that imports trytond, and only
  when long-polling routes need the models);
* :mod:`~oe_web_socketio.hosts.tryton.host`: :class:`TrytonHost`, which
  gathers them and contributes the bus's route, notification consumer and
  counter to the server.

The names of this package are those of the module ``hosts/tryton.py`` it
replaces (the command line, the README, the tests and addons import them
from here). Importing it imports neither trytond, gevent nor psycopg_pool.
"""

from __future__ import annotations

from oe_web_socketio.hosts.tryton.host import BUS_CHANNEL, TrytonHost
from oe_web_socketio.hosts.tryton.sessions import (
    DATABASE_HEADER,
    INVALID_SESSION,
    SESSION_QUERY,
    TrytonAuthenticator,
    TrytonSessions,
)
from oe_web_socketio.hosts.tryton.settings import (
    DEFAULT_SESSION_MAX_AGE,
    TrytonSettings,
    database_uri,
)

__all__ = [
    "BUS_CHANNEL",
    "DATABASE_HEADER",
    "DEFAULT_SESSION_MAX_AGE",
    "INVALID_SESSION",
    "SESSION_QUERY",
    "TrytonAuthenticator",
    "TrytonHost",
    "TrytonSessions",
    "TrytonSettings",
    "database_uri",
]
