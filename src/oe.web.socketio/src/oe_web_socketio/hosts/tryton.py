"""The Tryton host: settings from trytond's configuration, sessions from
``ir_session``.

Tryton (trytond 8.0) keeps a session as a row of ``ir_session``:
``create_uid`` is the user, ``key`` 64 hex digits, ``ip_address`` the
client's address as trytond saw it (``NULL`` without one), ``create_date``
when it logged in. ``Session.check`` accepts the session of user *uid* with
key *key* from address *address* when a row has that user, address and key
(compared in constant time) and ``abs(create_date - now) < [session]
max_age``; ``common.db.logout`` deletes the row.

:class:`TrytonAuthenticator` applies the same rules with one read-only
query, through the cursor pool: ``Session.check`` itself deletes expired
rows, so it cannot run read-only, and importing trytond would cost seconds
and a configuration of its own. Like ``Session.check``, it ignores the
login the client presents and answers with the user's login from
``res_user``; unlike it, it also refuses inactive users (trytond refuses
them at login).

Time zones: trytond runs with ``TZ=UTC`` and connects with ``PGTZ=UTC``,
whatever the machine's zone, so ``create_date`` (a ``timestamp without
time zone`` set to ``CURRENT_TIMESTAMP``) holds UTC wall-clock time. The
query compares it with ``CURRENT_TIMESTAMP AT TIME ZONE 'UTC'``, which
does not depend on the ``TimeZone`` of our own connection.

:class:`TrytonHost` is the :class:`~oe_web_socketio.hosts.Host` of Tryton:
those sessions, cursor pools on trytond's databases, and trytond's models
(:mod:`~oe_web_socketio.hosts.tryton_orm`, loaded only when long-polling
routes need them).

This module never imports trytond (only :meth:`TrytonHost.orm` does).
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from secrets import compare_digest
from typing import TYPE_CHECKING, Any, NoReturn

from oe_web_socketio.auth import Credentials, Identity, credentials_from_request
from oe_web_socketio.config import Config, read_ini
from oe_web_socketio.exceptions import AuthenticationError, ConfigError
from oe_web_socketio.hosts import Host

if TYPE_CHECKING:
    # Not at run time: importing psycopg_pool before gevent's patch would
    # keep blocking primitives; settings are read before it.
    from oe_web_socketio.hosts.tryton_orm import TrytonORM
    from oe_web_socketio.pool import CursorPools

logger = logging.getLogger("oe_web_socketio.auth")

#: trytond's default ``[session] max_age``: 30 days, in seconds.
DEFAULT_SESSION_MAX_AGE = 60 * 60 * 24 * 30

#: What a client is told when its session is refused, whatever the cause:
#: naming the part at fault would help forging.
INVALID_SESSION = "invalid or expired session"

#: One row per session of the user (or one row of NULLs without any
#: session). ``age`` is in seconds, negative for a date in the future.
SESSION_QUERY = """\
SELECT u.login, u.active, s.key, s.ip_address,
    extract(epoch FROM (CURRENT_TIMESTAMP AT TIME ZONE 'UTC') - s.create_date)
FROM res_user AS u
LEFT JOIN ir_session AS s ON s.create_uid = u.id
WHERE u.id = %(uid)s"""


@dataclasses.dataclass(frozen=True)
class TrytonSettings:
    """What the server needs from trytond's configuration.

    :ivar database_uri: ``[database] uri``: a libpq URI whose path, if any,
        is replaced by the database name (as trytond does).
    :ivar session_max_age: ``[session] max_age``: seconds a session lives
        after its login.
    """

    database_uri: str
    session_max_age: int = DEFAULT_SESSION_MAX_AGE

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
        try:
            return cls(database_uri=uri, session_max_age=max_age)
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


class TrytonAuthenticator:
    """Validates Tryton sessions read-only: an
    :class:`~oe_web_socketio.auth.Authenticator`.

    :param pools: the read-only cursor pools of *databases*.
    :param settings: trytond's settings (the session lifetime).
    :param databases: the databases clients may name.
    :param default_database: the database of clients that name none.

    Every refusal raises :class:`AuthenticationError` and logs one line on
    the logger ``oe_web_socketio.auth`` with the login, the uid, the address
    and the real cause; never the key.
    """

    def __init__(
        self,
        pools: CursorPools,
        settings: TrytonSettings,
        databases: Iterable[str],
        default_database: str,
    ) -> None:
        self.pools = pools
        self.settings = settings
        self.databases = frozenset(databases)
        if default_database not in self.databases:
            raise ValueError(f"the default database {default_database!r} is not served")
        self.default_database = default_database

    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        """Return who presented *credentials* from *address*.

        :param address: the client's address as trytond recorded it for
            the session (see :func:`oe_web_socketio.auth.client_address`),
            or ``None``.
        :raises AuthenticationError: the database is not served, or the
            session is unknown, another user's, bound to another address,
            expired, or its user inactive or deleted.
        :raises DatabaseUnavailable: the database cannot be queried now
            (:class:`~oe_web_socketio.exceptions.PoolTimeout` included).
        """
        database = credentials.database
        if database is None:
            database = self.default_database
        if database not in self.databases:
            shown = _shorten(database)
            self._refuse(
                credentials,
                address,
                shown,
                f"database {shown!r} is not served",
                reason=f"unknown database {shown!r}",
            )
        with self.pools.cursor(database) as cursor:
            cursor.execute(SESSION_QUERY, {"uid": credentials.uid})
            rows = cursor.fetchall()
        max_age = self.settings.session_max_age
        if not rows:
            self._refuse(credentials, address, database, "no such user")
        login, active = rows[0][:2]
        if not active:
            self._refuse(credentials, address, database, "the user is inactive")
        presented = credentials.key.encode()
        # Every key is compared, in constant time, as Session.check does.
        matches = [
            (bound_address, age)
            for _, _, key, bound_address, age in rows
            if key is not None and compare_digest(key.encode(), presented)
        ]
        if not matches:
            self._refuse(
                credentials,
                address,
                database,
                "no session of this user has this key "
                "(logged out, expired and purged, or forged)",
            )
        bound_address, age = matches[0]
        if bound_address != address:
            self._refuse(
                credentials,
                address,
                database,
                f"the session is bound to the address {bound_address or 'none'}",
            )
        if age is None:
            self._refuse(
                credentials, address, database, "the session has no creation date"
            )
        if not abs(age) < max_age:
            self._refuse(
                credentials,
                address,
                database,
                f"the session expired: logged in {float(age):.0f} s ago, "
                f"[session] max_age is {max_age} s",
                level=logging.INFO,
            )
        logger.debug(
            "Authenticated %r (uid %d) from %s on %r",
            login,
            credentials.uid,
            address or "no address",
            database,
        )
        return Identity(db=database, uid=credentials.uid, login=login)

    @staticmethod
    def _refuse(
        credentials: Credentials,
        address: str | None,
        database: str,
        cause: str,
        reason: str = INVALID_SESSION,
        level: int = logging.WARNING,
    ) -> NoReturn:
        logger.log(
            level,
            "Refused %r (uid %d) from %s on %r: %s",
            _shorten(credentials.login),
            credentials.uid,
            address or "no address",
            database,
            cause,
        )
        raise AuthenticationError(reason)


def _shorten(text: str, limit: int = 64) -> str:
    """*text*, cut to *limit* characters: clients choose it, logs show it."""
    return text if len(text) <= limit else text[:limit] + "…"


class TrytonHost(Host):
    """The Tryton host: sessions of ``ir_session`` checked read-only,
    read-only cursors on trytond's databases, trytond's models.

    :param config: the server's settings (databases, ``max_cursor``,
        ``pool_timeout``, ``trytond_config``).
    :param settings: what trytond's configuration says.

    Build it after :func:`oe_web_socketio.patch.patch`: it opens the
    cursor pools (psycopg_pool takes its locks at import time).
    """

    name = "tryton"

    def __init__(self, config: Config, settings: TrytonSettings) -> None:
        from oe_web_socketio.pool import CursorPools

        self.config = config
        self.settings = settings
        self.pools: CursorPools = CursorPools(
            settings.conninfo, config.max_cursor, config.pool_timeout
        )
        self.authenticator: TrytonAuthenticator = TrytonAuthenticator(
            self.pools, settings, config.databases, config.databases[0]
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

    def authenticate(
        self, environ: Mapping[str, Any], auth: Any, address: str | None
    ) -> Identity | None:
        """The Tryton session the client presents (see
        :func:`oe_web_socketio.auth.credentials_from_request`), validated
        by :class:`TrytonAuthenticator`; ``None`` without one."""
        credentials = credentials_from_request(environ, auth)
        if credentials is None:
            return None
        return self.authenticator.authenticate(credentials, address)

    def conninfo(self, database: str) -> str:
        return self.settings.conninfo(database)

    def orm(self) -> TrytonORM:
        """Import trytond, load its models and warm them up in a greenlet
        (see :class:`~oe_web_socketio.hosts.tryton_orm.TrytonORM`).

        :raises ConfigError: the trytond configuration cannot be used.
        """
        import gevent

        from oe_web_socketio.hosts.tryton_orm import TrytonORM

        assert self.config.trytond_config is not None
        orm = TrytonORM(
            self.config.trytond_config,
            self.config.databases,
            self.config.max_cursor,
            self.config.pool_timeout,
        )
        orm.load()
        gevent.spawn(orm.warm_up)
        return orm
