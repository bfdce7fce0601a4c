"""Typed settings of the server.

:class:`Config` is an immutable value: it is built once (from defaults, a
configuration file, then command-line overrides) and passed to whatever
needs it. Invariants:

* a :class:`Config` instance is always valid: every constructor path, the
  dataclass constructor, :meth:`Config.from_file` and :meth:`Config.replace`,
  runs the same validation and raises :class:`~.exceptions.ConfigError`
  naming the key at fault;
* nothing here reads the environment, and files are read only by
  :meth:`Config.from_file`, never at import time.

The configuration file is an INI file with one section,
``[oe_web_socketio]``, whose keys are the field names of :class:`Config`.
List values are comma separated. Other sections are ignored, so the file
may be shared; unknown keys in our section are errors.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import ipaddress
import math
import re
import typing
import urllib.parse
from collections.abc import Callable
from typing import Any

from oe_web_socketio.exceptions import ConfigError

#: The section of the configuration file read by :meth:`Config.from_file`.
SECTION = "oe_web_socketio"

#: Accepted values of :attr:`Config.log_level`.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Longest :attr:`Config.worker`: it starts every session id.
WORKER_MAX_LENGTH = 32

#: A valid :attr:`Config.worker`: neither ``.`` (which ends it in a session
#: id) nor anything a URL's query or nginx's regular expressions would
#: read otherwise.
WORKER_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{WORKER_MAX_LENGTH}}}")

#: Accepted values of :attr:`Config.broker`.
BROKERS = ("local", "postgresql", "redis")

#: The fields :attr:`Config.message_log_format` may use.
MESSAGE_LOG_FIELDS = (
    "address",
    "namespace",
    "sid",
    "uid",
    "login",
    "db",
    "event",
    "size",
)

#: The default of :attr:`Config.message_log_format`, after the seed's
#: ``SOCKETIO_MESSAGE_LOG_FORMAT`` (the log record has the time already):
#: ``127.0.0.1 - admin "Socket.IO /chat shout" 42``.
DEFAULT_MESSAGE_LOG_FORMAT = (
    '%(address)s - %(login)s "Socket.IO %(namespace)s %(event)s" %(size)s'
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Settings of one server process.

    :ivar databases: names of the Tryton databases served; at least one.
    :ivar interface: address (or host name) the server listens on.
    :ivar port: TCP port the server listens on; ``0`` picks a free port.
    :ivar max_cursor: size of the read-only cursor pool per database (the
        session checks, the outbox's replays), and nothing else.
    :ivar pool_timeout: seconds a reader waits for a free cursor before it
        is told to come back later.
    :ivar trytond_config: path of trytond's configuration file, if any.
    :ivar trusted_proxies: addresses or networks of the reverse proxies
        whose ``X-Forwarded-*`` headers are believed.
    :ivar log_level: one of :data:`LOG_LEVELS`.
    :ivar ping_interval: seconds between Engine.IO pings. Engine.IO
        announces it to clients in whole seconds (it truncates).
    :ivar ping_timeout: seconds a client has to answer a ping.
    :ivar max_http_buffer_size: largest message accepted, in bytes.
    :ivar cors_allowed_origins: origins (``scheme://host[:port]``) allowed
        to connect from another origin; ``("*",)`` allows any origin and
        the empty tuple allows the same origin only.
    :ivar max_event_size: largest Socket.IO event accepted, in bytes of its
        packet (binary attachments included); a larger one is refused
        with an error to its client, which stays connected. At most
        :attr:`max_http_buffer_size`, beyond which Engine.IO closes the
        connection.
    :ivar message_log_format: ``%``-format of the line logged (logger
        ``oe_web_socketio.messages``, level INFO) for each event received,
        with the fields ``address``, ``namespace``, ``sid``, ``uid``,
        ``login``, ``db``, ``event`` and ``size``; ``None`` (an empty value
        in the file) logs nothing.
    :ivar namespaces: namespaces to serve besides those of the entry point
        group ``oe_web_socketio.namespaces``, each ``PATH=module:Class``.
    :ivar load_entry_points: whether to serve the namespaces of that entry
        point group (every installed egg's), and the long-polling routes of
        the group ``oe_web_socketio.longpolling``; off for a server that
        must serve exactly :attr:`namespaces` and the routes of
        :attr:`longpolling_modules`.
    :ivar history_max_age: seconds a message published in the database is
        kept for clients that resume (see :mod:`oe_web_socketio.bridge`;
        on a host without a database, in memory by
        :mod:`oe_web_socketio.pubsub.local`); a client away longer is told
        to resynchronise.
    :ivar history_max_count: most messages kept per database for clients
        that resume.
    :ivar bus_long_polling_timeout: seconds a poll of the Tryton bus
        (``POST /<db>/bus``) is held when no message comes, after which it
        is answered the empty message (trytond's ``[bus]
        long_polling_timeout``).
    :ivar bus_cache_timeout: seconds a message of the Tryton bus is kept
        for polls that come later (trytond's ``[bus] cache_timeout``).
    :ivar longpolling_path: the prefix of every long-polling route
        (:mod:`oe_web_socketio.longpolling`): ``/longpolling`` serves the
        route ``/mainroute`` at ``/longpolling/mainroute``. A reverse
        proxy must send that prefix to this server (the appliance's nginx
        sends ``/longpolling/``).
    :ivar longpolling_timeout: seconds a long-polling handler may wait for
        news before the client is answered ``204 No Content`` (and polls
        again). The reverse proxy's read timeout must be longer.
    :ivar longpolling_transactions: most trytond transactions that the
        long-polling handlers run at once per database (the others wait
        their turn, at most :attr:`pool_timeout` seconds); trytond's own
        connection pool in this process is sized from it (``2 × n + 1``).
        ``None`` (the default; ``auto`` or empty in the file): as many as
        :attr:`max_cursor`. See :attr:`orm_transactions`.
    :ivar longpolling_max_body: largest body of a request to a long-polling
        route, in bytes (``413`` beyond). ``None`` (the default; ``auto``
        or empty in the file): :attr:`max_http_buffer_size`. See
        :attr:`longpolling_body_limit`.
    :ivar longpolling_modules: modules to import at start for the
        long-polling routes they declare, besides those of the entry point
        group ``oe_web_socketio.longpolling`` (see
        :attr:`load_entry_points`, which covers that group too).
    :ivar session_check_interval: seconds between two checks that the
        sessions of connected, authenticated sockets are still valid (a
        logout, an expired or deleted session, a deactivated user): such a
        socket is told (``error`` event, ``authentication_failed``) and
        disconnected. ``0`` checks only at connection.
    :ivar log_rate_limit: most log lines about one client address's faults
        (refused packets, requests, events) per minute; the others are
        counted, and their number logged once the minute is over. ``0``:
        no limit. See :mod:`oe_web_socketio.logs`.
    :ivar max_queued_bytes: most bytes of messages waiting to be sent to
        one client (a socket that stopped reading, a polling client that
        stopped polling); one more message and the client is disconnected,
        with one log line. ``0``: no cap. See :mod:`oe_web_socketio.limits`.
    :ivar max_connections: most Engine.IO sessions (clients) the process
        serves at once; a handshake beyond it is answered ``503`` with
        ``Retry-After``. ``None`` (the default; ``auto`` or empty in the
        file): as many as the process's open files limit leaves room for,
        once the database connections and a margin are counted (see
        :func:`oe_web_socketio.limits.session_limit`); a number above that
        is refused when the server starts. ``0``: no cap.
    :ivar connect_timeout: seconds a client may hold an Engine.IO session
        without asking for a Socket.IO namespace, after which the session
        is closed. ``0``: until its ping timeout.
    :ivar websocket_compression: whether a WebSocket accepts the
        ``permessage-deflate`` extension when the client offers it (every
        browser does). Off by default, as in Node's Socket.IO since 3.0.
        When on, messages of 1 KiB or more are compressed, smaller ones
        sent as is (:data:`.websocket.COMPRESSION_THRESHOLD`, as Node's
        ``ws``); a connection that gets compressed messages holds some
        90 KiB of zlib state. Turn it on only for large, repetitive
        messages.
    :ivar admin_ui: whether the namespace of the Socket.IO Admin UI
        (``/admin``, see :mod:`oe_web_socketio.admin`) is served, to the
        host's administrators only. Off by default: watching wraps every
        emit of the process.
    :ivar worker: the name of this process among the workers behind one
        reverse proxy (letters, digits, ``_`` and ``-``; at most
        :data:`WORKER_MAX_LENGTH`): every Engine.IO session id it makes
        starts with ``<worker>.``, by which the proxy sends the session's
        requests back to it (see :mod:`oe_web_socketio.sockets`), and
        ``/health`` names it. Empty (the default): a lone server, whose
        session ids are python-engineio's own.
    :ivar broker: what carries the emits of one worker to the sockets of
        the others (see :mod:`oe_web_socketio.pubsub.fanout`): ``local``
        (one process: python-socketio's own manager, nothing crosses),
        ``postgresql`` (``NOTIFY``/``LISTEN`` in the first of
        :attr:`databases`) or ``redis`` (at :attr:`broker_url`). Every
        worker of a cluster must say the same; a worker that disagrees
        with those running refuses to start.
    :ivar broker_url: where Redis is, ``redis://host:port/db``, for
        ``broker = redis``; ignored otherwise.
    """

    databases: tuple[str, ...] = ("oe",)
    interface: str = "127.0.0.1"
    port: int = 8068
    max_cursor: int = 8
    pool_timeout: float = 10.0
    trytond_config: str | None = None
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    log_level: str = "INFO"
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_http_buffer_size: int = 1_000_000
    cors_allowed_origins: tuple[str, ...] = ()
    max_event_size: int = 65_536
    message_log_format: str | None = DEFAULT_MESSAGE_LOG_FORMAT
    namespaces: tuple[str, ...] = ()
    load_entry_points: bool = True
    history_max_age: float = 86_400.0
    history_max_count: int = 100_000
    bus_long_polling_timeout: float = 300.0
    bus_cache_timeout: float = 300.0
    longpolling_path: str = "/longpolling"
    longpolling_timeout: float = 60.0
    longpolling_transactions: int | None = None
    longpolling_max_body: int | None = None
    longpolling_modules: tuple[str, ...] = ()
    session_check_interval: float = 60.0
    log_rate_limit: int = 20
    max_queued_bytes: int = 4 * 1024 * 1024
    max_connections: int | None = None
    connect_timeout: float = 10.0
    websocket_compression: bool = False
    admin_ui: bool = False
    worker: str = ""
    broker: str = "local"
    broker_url: str | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            _check_type(field.name, value, _HINTS[field.name])
            validate = _VALIDATORS.get(field.name)
            if validate is not None:
                problem = validate(value)
                if problem is not None:
                    raise ConfigError(problem, key=field.name)
        if self.broker == "redis" and self.broker_url is None:
            raise ConfigError("broker = redis needs broker_url", key="broker_url")

    @property
    def orm_transactions(self) -> int:
        """:attr:`longpolling_transactions`, or :attr:`max_cursor` when
        unset: most trytond transactions at once per database."""
        if self.longpolling_transactions is None:
            return self.max_cursor
        return self.longpolling_transactions

    @property
    def longpolling_body_limit(self) -> int:
        """:attr:`longpolling_max_body`, or :attr:`max_http_buffer_size`
        when unset: the largest body of a long-polling request."""
        if self.longpolling_max_body is None:
            return self.max_http_buffer_size
        return self.longpolling_max_body

    @classmethod
    def from_file(cls, path: str) -> Config:
        """Read the ``[oe_web_socketio]`` section of the INI file *path*.

        Keys absent from the file keep their default.

        :raises ConfigError: the file cannot be read or parsed, it has no
            ``[oe_web_socketio]`` section, or a key is unknown or has an
            invalid value. The message names *path* and the key.
        """
        parser = read_ini(path)
        if not parser.has_section(SECTION):
            raise ConfigError(f"no [{SECTION}] section", source=path)
        try:
            values = _parse_section(parser[SECTION])
            return cls(**values)
        except ConfigError as exc:
            raise exc.with_source(path) from None

    def replace(self, **overrides: Any) -> Config:
        """Return a copy with the fields named in *overrides* replaced.

        :raises ConfigError: a new value is invalid.
        """
        return dataclasses.replace(self, **overrides)


#: Resolved type of each field of :class:`Config`.
_HINTS: dict[str, Any] = typing.get_type_hints(Config)


def _parse_section(section: configparser.SectionProxy) -> dict[str, Any]:
    """Convert the raw strings of *section* to typed field values."""
    known = [field.name for field in dataclasses.fields(Config)]
    values = {}
    for key, raw in section.items():
        if key not in known:
            raise ConfigError(_unknown_key_problem(key, known), key=key)
        parse = _KEY_PARSERS.get(key) or _PARSERS[_HINTS[key]]
        values[key] = parse(key, raw.strip())
    return values


def _unknown_key_problem(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key (known keys: {', '.join(known)})"


def _parse_int(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"not an integer: {raw!r}", key=key) from None


def _parse_float(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"not a number: {raw!r}", key=key) from None
    if not math.isfinite(value):
        raise ConfigError(f"not a finite number: {raw!r}", key=key)
    return value


def _parse_str(key: str, raw: str) -> str:
    return raw


def _parse_optional_str(key: str, raw: str) -> str | None:
    return raw or None


def _parse_optional_int(key: str, raw: str) -> int | None:
    if raw.lower() in ("", "auto"):
        return None
    return _parse_int(key, raw)


def read_ini(path: str) -> configparser.ConfigParser:
    """Parse the INI file *path* (no interpolation: ``%`` is literal).

    :raises ConfigError: the file cannot be read, is not UTF-8, or is not
        valid INI; the message names *path*.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("the file is not valid UTF-8", source=path) from exc
    except configparser.Error as exc:
        raise ConfigError(f"not a valid INI file: {exc.message}", source=path) from exc
    return parser


_BOOLEANS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def _parse_bool(key: str, raw: str) -> bool:
    try:
        return _BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise ConfigError(f"not a boolean (true or false): {raw!r}", key=key) from None


def _parse_list(key: str, raw: str) -> tuple[str, ...]:
    items = [item.strip() for item in raw.split(",")]
    if items == [""]:
        return ()
    if "" in items:
        raise ConfigError(f"empty item in comma separated list {raw!r}", key=key)
    return tuple(items)


_PARSERS: dict[Any, Callable[[str, str], Any]] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    str: _parse_str,
    str | None: _parse_optional_str,
    int | None: _parse_optional_int,
    tuple[str, ...]: _parse_list,
}

#: Parsers of the keys whose conversion is more than their type's.
_KEY_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "log_level": lambda key, raw: raw.upper(),
}


def _check_type(key: str, value: object, hint: object) -> None:
    """Refuse a value of the wrong type, e.g. a list where a tuple is due."""
    if hint is bool:
        ok = isinstance(value, bool)
        expected = "true or false"
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    elif hint is str:
        ok = isinstance(value, str)
        expected = "a string"
    elif hint == str | None:
        ok = value is None or isinstance(value, str)
        expected = "a string or None"
    elif hint == int | None:
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        expected = "an integer or None"
    else:  # tuple[str, ...]
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        expected = "a tuple of strings"
    if not ok:
        raise ConfigError(f"must be {expected}, got {value!r}", key=key)


def _check_databases(names: tuple[str, ...]) -> str | None:
    if not names:
        return "at least one database is required"
    for name in names:
        if not name or name != name.strip():
            return f"invalid database name {name!r}"
        if "/" in name:
            return f"a database name cannot contain '/': {name!r}"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        return f"database listed twice: {', '.join(duplicates)}"
    return None


def _check_interface(interface: str) -> str | None:
    if not interface or interface != interface.strip():
        return f"invalid interface {interface!r}"
    return None


def _check_port(port: int) -> str | None:
    if not 0 <= port <= 65535:
        return f"must be between 0 and 65535, got {port}"
    return None


def _at_least(minimum: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        if value < minimum:
            return f"must be at least {minimum}, got {value}"
        return None

    return check


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """*check*, letting ``None`` (not set) pass."""

    def check_set(value: Any) -> str | None:
        return None if value is None else check(value)

    return check_set


def _positive(value: float) -> str | None:
    if not (math.isfinite(value) and value > 0):
        return f"must be a positive number of seconds, got {value}"
    return None


def _seconds_or_zero(value: float) -> str | None:
    if not (math.isfinite(value) and value >= 0):
        return f"must be a number of seconds, 0 or more, got {value}"
    return None


def _check_trusted_proxies(proxies: tuple[str, ...]) -> str | None:
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            return f"not an IP address or network: {proxy!r}"
    return None


def _check_log_level(level: str) -> str | None:
    if level not in LOG_LEVELS:
        return f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
    return None


def _check_origins(origins: tuple[str, ...]) -> str | None:
    if "*" in origins:
        if len(origins) > 1:
            return "'*' allows any origin and cannot be combined with others"
        return None
    for origin in origins:
        parts = urllib.parse.urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path
            or parts.query
            or parts.fragment
        ):
            return f"not an origin (scheme://host[:port]): {origin!r}"
    return None


def _check_message_log_format(log_format: str | None) -> str | None:
    if log_format is None:
        return None
    sample = dict.fromkeys(MESSAGE_LOG_FIELDS, 0)
    try:
        log_format % sample
    except KeyError as exc:
        return (
            f"unknown field {exc.args[0]!r} (known fields: "
            f"{', '.join(MESSAGE_LOG_FIELDS)})"
        )
    except (ValueError, TypeError) as exc:
        return f"not a valid %-format: {exc}"
    return None


def _check_namespaces(specs: tuple[str, ...]) -> str | None:
    for spec in specs:
        path, sep, target = spec.partition("=")
        module, colon, name = target.partition(":")
        if not (sep and path.startswith("/") and module and colon and name):
            return f"not PATH=module:Class: {spec!r}"
    return None


def _check_longpolling_path(path: str) -> str | None:
    if not (path.startswith("/") and len(path) > 1 and not path.endswith("/")):
        return f"must start with '/' and not end with '/', got {path!r}"
    if "//" in path or any(char in path for char in "<>?#%\\ \t"):
        return f"must be a plain path (no '//', placeholder, query or space): {path!r}"
    if path == "/health" or path.split("/")[1] == "socket.io":
        return f"{path!r} is taken by the server"
    return None


def _check_worker(worker: str) -> str | None:
    if worker and not WORKER_NAME.fullmatch(worker):
        return (
            "must be letters, digits, '_' and '-', at most "
            f"{WORKER_MAX_LENGTH} of them, got {worker!r}"
        )
    return None


def _check_modules(modules: tuple[str, ...]) -> str | None:
    for module in modules:
        if not all(part.isidentifier() for part in module.split(".")):
            return f"not a module name: {module!r}"
    return None


def _check_broker(value: str) -> str | None:
    if value not in BROKERS:
        return f"must be one of {', '.join(BROKERS)}, got {value!r}"
    return None


def _check_broker_url(value: str) -> str | None:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (
        parsed.hostname or parsed.path
    ):
        return f"not a Redis URL (redis://host:port/db): {value!r}"
    return None


_VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    "databases": _check_databases,
    "interface": _check_interface,
    "port": _check_port,
    "max_cursor": _at_least(1),
    "pool_timeout": _positive,
    "trusted_proxies": _check_trusted_proxies,
    "log_level": _check_log_level,
    "ping_interval": _positive,
    "ping_timeout": _positive,
    "max_http_buffer_size": _at_least(1),
    "cors_allowed_origins": _check_origins,
    "max_event_size": _at_least(1),
    "message_log_format": _check_message_log_format,
    "namespaces": _check_namespaces,
    "history_max_age": _positive,
    "history_max_count": _at_least(1),
    "bus_long_polling_timeout": _positive,
    "bus_cache_timeout": _positive,
    "longpolling_path": _check_longpolling_path,
    "longpolling_timeout": _positive,
    "longpolling_transactions": _optional(_at_least(1)),
    "longpolling_max_body": _optional(_at_least(1)),
    "longpolling_modules": _check_modules,
    "session_check_interval": _seconds_or_zero,
    "log_rate_limit": _at_least(0),
    "max_queued_bytes": _at_least(0),
    "max_connections": _optional(_at_least(0)),
    "connect_timeout": _seconds_or_zero,
    "worker": _check_worker,
    "broker": _check_broker,
    "broker_url": _optional(_check_broker_url),
}
