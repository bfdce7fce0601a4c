"""Tryton's sessions, checked read-only against ``ir_session``.

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

:class:`TrytonSessions` is the :class:`~oe_web_socketio.hosts.SessionHost`
of Tryton's clients: their plain HTTP requests name their database with
the header :data:`DATABASE_HEADER`, and trytond's models are told of each
request as trytond's own RPC layer tells them (:meth:`TrytonSessions.request_context`).

Refusals are logged on the logger ``oe_web_socketio.auth`` (its name from
before this module existed, kept for the sites that filter on it). This
module never imports trytond.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from secrets import compare_digest
from typing import TYPE_CHECKING, Any, NoReturn

from oe_web_socketio.auth import Credentials, Identity
from oe_web_socketio.exceptions import AuthenticationError
from oe_web_socketio.hosts import SessionHost

if TYPE_CHECKING:
    from oe_web_socketio.hosts.tryton.settings import TrytonSettings
    from oe_web_socketio.pool import CursorPools

logger = logging.getLogger("oe_web_socketio.auth")

#: The cookie Tryton 8 sets on login (``login:uid:key``, path ``/<db>``).
SESSION_COOKIE = "tryton_session"

#: The header naming the database of a plain HTTP request.
DATABASE_HEADER = "X-Tryton-Database"

#: :data:`DATABASE_HEADER` in a WSGI environ.
DATABASE_ENVIRON = "HTTP_" + DATABASE_HEADER.upper().replace("-", "_")

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


#: Whether user ``uid`` is in the group "Administration" (``res.group_admin``),
#: directly or through a group that inherits from it (``parent``, whose
#: accesses a group inherits), as trytond's ``res.user.get_groups`` counts
#: them: active groups only.
ADMINISTRATOR_QUERY = """\
WITH RECURSIVE reach(id) AS (
    SELECT g.id FROM "res_user-res_group" AS ug
    JOIN res_group AS g ON g.id = ug."group" AND g.active
    WHERE ug."user" = %(uid)s
    UNION
    SELECT g.parent FROM res_group AS g
    JOIN reach AS r ON g.id = r.id
    JOIN res_group AS p ON p.id = g.parent AND p.active
)
SELECT EXISTS (
    SELECT 1 FROM reach AS r
    JOIN ir_model_data AS d ON d.db_id = r.id
    WHERE d.model = 'res.group' AND d.module = 'res' AND d.fs_id = 'group_admin')"""


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


class TrytonSessions(SessionHost):
    """Tryton's sessions, validated by *authenticator* (for the server,
    a :class:`TrytonAuthenticator`; ``None`` refuses every session), for
    clients that name their database with :data:`DATABASE_HEADER`.

    A host without database of its own:
    :class:`~oe_web_socketio.hosts.tryton.TrytonHost` adds the cursor
    pools, the bus and the models.
    """

    name = "tryton"
    session_cookie = SESSION_COOKIE

    def named_database(self, environ: Mapping[str, Any]) -> str | None:
        """The database of :data:`DATABASE_HEADER`, if the request has one."""
        return environ.get(DATABASE_ENVIRON) or None

    def request_context(
        self, environ: Mapping[str, Any], address: str | None
    ) -> Mapping[str, Any]:
        """trytond's ``_request`` context, as its own requests build it."""
        scheme = str(
            environ.get("HTTP_X_FORWARDED_PROTO")
            or environ.get("wsgi.url_scheme", "http")
        )
        return {
            "remote_addr": address,
            "http_host": environ.get("HTTP_HOST"),
            "scheme": scheme,
            "is_secure": scheme == "https",
            "root_path": "",
        }
