"""What the server reads of trytond's configuration file, in one place.

The file (``trytond.conf``, :attr:`Config.trytond_config
<oe_web_socketio.config.Config>`) is read once, by
:meth:`TrytonSettings.from_config_file`, when the command line builds the
Tryton host: the database URI (for the cursor pools and the bridge's
``LISTEN``), the lifetime of a session (for the session checks) and
whether the bus may be subscribed to (for ``POST /<database>/bus``).
trytond itself reads the file again when the long-polling routes load its
models (:mod:`~oe_web_socketio.hosts.tryton.orm`): that is trytond's own
configuration, environment overrides included, not ours.

Invariants: the environment (``TRYTOND_DATABASE__URI`` and the like) is
not read here; every problem is a
:class:`~oe_web_socketio.exceptions.ConfigError` naming the option and the
file. Importing this module imports neither trytond nor gevent.
"""

from __future__ import annotations

import configparser
import dataclasses
import urllib.parse

from oe_web_socketio.config import read_ini
from oe_web_socketio.exceptions import ConfigError

__all__ = [
    "DEFAULT_SESSION_MAX_AGE",
    "TrytonSettings",
    "database_uri",
]

#: trytond's default ``[session] max_age``: 30 days, in seconds.
DEFAULT_SESSION_MAX_AGE = 60 * 60 * 24 * 30


@dataclasses.dataclass(frozen=True)
class TrytonSettings:
    """What the server needs from trytond's configuration.

    :ivar database_uri: ``[database] uri``: a libpq URI whose path, if any,
        is replaced by the database name (as trytond does).
    :ivar session_max_age: ``[session] max_age``: seconds a session lives
        after its login.
    :ivar allow_subscribe: ``[bus] allow_subscribe``: whether the web
        client may poll the bus (trytond's default: no).
    """

    database_uri: str
    session_max_age: int = DEFAULT_SESSION_MAX_AGE
    allow_subscribe: bool = False

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.database_uri).scheme
        if scheme != "postgresql":
            raise ConfigError(
                "oe_web_socketio needs PostgreSQL, a URI "
                f"postgresql://…, got {scheme + '://…' if scheme else 'none'}",
                key="[database] uri",
            )
        if self.session_max_age < 1:
            raise ConfigError(
                f"must be a positive number of seconds, got {self.session_max_age}",
                key="[session] max_age",
            )

    @classmethod
    def from_config_file(cls, path: str) -> TrytonSettings:
        """Read trytond's configuration file *path* (``trytond.conf``).

        Options absent from the file keep trytond's default, except the
        database URI, which must be there: trytond's default is SQLite.
        The environment (``TRYTOND_DATABASE__URI`` and the like) is not
        read.

        :raises ConfigError: the file cannot be read or parsed, or an
            option is missing or invalid. The message names *path*.
        """
        parser = read_ini(path)
        uri = parser.get("database", "uri", fallback="").strip()
        if not uri:
            raise ConfigError(
                "missing: oe_web_socketio needs trytond's PostgreSQL URI",
                key="[database] uri",
                source=path,
            )
        raw_max_age = parser.get("session", "max_age", fallback=None)
        try:
            max_age = (
                DEFAULT_SESSION_MAX_AGE
                if raw_max_age is None
                else int(raw_max_age.strip())
            )
        except ValueError:
            raise ConfigError(
                f"not an integer: {raw_max_age!r}",
                key="[session] max_age",
                source=path,
            ) from None
        subscribe = _allow_subscribe(parser, path)
        try:
            return cls(
                database_uri=uri, session_max_age=max_age, allow_subscribe=subscribe
            )
        except ConfigError as exc:
            raise exc.with_source(path) from None

    def conninfo(self, database: str) -> str:
        """The libpq URI of *database*: see :func:`database_uri`."""
        return database_uri(self.database_uri, database)


def database_uri(uri: str, database: str) -> str:
    """*uri* with its path replaced by ``/<database>``, as trytond does.

    The query string (``?host=/run/postgresql&port=5432``) is kept, the
    fragment dropped. Unlike :func:`urllib.parse.urlunsplit`, this keeps
    the ``//`` of a URI without host (``postgresql:///?host=…``), which
    libpq requires.
    """
    parts = urllib.parse.urlsplit(uri)
    path = "/" + urllib.parse.quote(database, safe="")
    query = f"?{parts.query}" if parts.query else ""
    return f"postgresql://{parts.netloc}{path}{query}"


def _allow_subscribe(parser: configparser.ConfigParser, source: str) -> bool:
    try:
        return parser.getboolean("bus", "allow_subscribe", fallback=False)
    except ValueError:
        raw = parser.get("bus", "allow_subscribe")
        raise ConfigError(
            f"not a boolean (true or false): {raw!r}",
            key="[bus] allow_subscribe",
            source=source,
        ) from None
