"""The Tryton bus, served here: ``POST /<database>/bus``.

trytond publishes on its bus with ``Bus.publish(channel, message)`` (and
``trytond.bus.notify(title, body, priority, user, client)``), which runs
``NOTIFY "bus", '{"channel": ..., "message": {..., "message_id": uuid}}'``
in the transaction, so the message exists only once it commits. The web
client long-polls ``POST /<database>/bus`` with ``{"channels": [...],
"last_message": id | null}`` and gets ``{"message": {...} | null,
"channel": ... | null}``. trytond holds each poll with a thread; this
module holds it with an event in the greenlet of its request, so one
process holds thousands of polls. The listener (:mod:`oe_web_socketio.listener`) calls
:meth:`TrytonBus.notify` with the text of each ``NOTIFY`` on ``"bus"``.

Invariants:

* the answers are trytond 8.0's, for the same request: ``200`` and
  ``application/json`` with the same JSON; ``401`` with an empty body
  and, unless the request says ``X-Requested-With: XMLHttpRequest``,
  ``WWW-Authenticate: Basic realm="Tryton"`` when the session is missing
  or refused; ``501`` when trytond's ``[bus] allow_subscribe`` is off;
  ``403`` for an ``Origin`` that is neither the request's host nor
  allowed (:attr:`~oe_web_socketio.config.Config.cors_allowed_origins`); ``400`` for a
  body that is not JSON, ``413`` for one too large; ``503`` with
  ``Retry-After`` when the session cannot be checked (the database is out
  of reach: one ERROR line) or the server is stopping. Where trytond would
  fail with ``500`` (a body that is not a JSON object, channels that are
  not a list of strings, too many or too long channels) the answer is
  ``400``. Error
  bodies are ours (``{"error": ...}``): clients read the status only;
* the channels of one user (:data:`USER_CHANNELS`: ``user:<uid>``,
  Tryton's own, and ``notification:<uid>``, which carries the user's
  ``res.notification`` count and texts) are only ever the caller's: a
  poll asking for any ``user:*`` or ``notification:*`` gets the caller's
  channel of that prefix instead (logged once when it named another
  user's), and every poll gets ``user:<uid>``. trytond 8.0 guards
  ``user:*`` alone and serves ``notification:<uid>`` of any user to any
  logged-in user. Any other channel name is accepted unchecked, as
  trytond does (``client:<tab>`` is a random id; ``chat:<record>`` is
  not checked against the record's access rights, as in trytond);
* :meth:`MessageCache.next` is ``trytond.bus._MessageQueue.get_next``:
  among the messages cached on the poll's channels, the first one after
  the message whose ``message_id`` is ``last_message``, none when that
  message is the last one, and the first one when ``last_message`` is
  ``null`` or unknown (never seen, expired, or on another channel);
* messages are cached in the order of their ``NOTIFY`` (commit order) for
  :attr:`~oe_web_socketio.config.Config.bus_cache_timeout` seconds, at most
  :attr:`TrytonBus.max_cached_messages` per database (the oldest go
  first, counted in :meth:`TrytonBus.stats`);
* a poll with nothing to read waits on one :class:`gevent.event.Event`,
  registered under each of its channels, at most
  :attr:`~oe_web_socketio.config.Config.bus_long_polling_timeout` seconds, after which
  it answers the empty message. A message wakes the polls of its channel
  only; nothing wakes on a timer meanwhile;
* :meth:`TrytonBus.notify` never blocks and never raises: a bad payload
  is logged (one line) and skipped.

One deliberate difference: trytond's listener caches the notifications it
reads in one go in reverse order (it pops them from the end of the
batch), so the messages of one transaction may reach its clients last
first; here they keep their commit order.

Caveats: the cache is this process's (as trytond's is per process): a
message published before this server started, or while its listener was
reconnecting, is not delivered. trytond's ``[bus] url_host`` is not
checked (the appliance leaves it unset: same origin). A poll whose client
went away stays held until a message on its channels or its timeout, as
in trytond.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

import gevent.event

from oe_web_socketio import auth
from oe_web_socketio.auth import Authenticator, Identity
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import (
    AuthenticationError,
    DatabaseUnavailable,
    HTTPError,
)
from oe_web_socketio.hosts.tryton.sessions import SESSION_COOKIE
from oe_web_socketio.routing import Request, Response, Route

__all__ = [
    "EMPTY",
    "PATH",
    "USER_CHANNELS",
    "Message",
    "MessageCache",
    "TrytonBus",
    "own_channels",
]

#: The logger's name from before the bus moved into the Tryton host.
logger = logging.getLogger("oe_web_socketio.bus")

#: The path of the route (a werkzeug rule, as trytond's).
PATH = "/<database>/bus"

#: The answer of a poll with no message: its timeout, or the shutdown.
EMPTY = {"message": None, "channel": None}

#: The prefixes of the channels of one user, followed by the user's id:
#: trytond's ``user:<uid>`` (``trytond.bus.notify(..., user=uid)``) and
#: ``notification:<uid>`` (``res.notification``, which sao shows). A poll
#: gets its caller's only (see :func:`own_channels`).
USER_CHANNELS = ("user:", "notification:")


class Message(NamedTuple):
    """A message of the bus, as cached."""

    #: Position in the cache of its database, increasing in arrival order.
    seq: int
    channel: str
    #: The ``message`` object of the notification, ``message_id`` included.
    content: dict[str, Any]
    message_id: str
    #: When it arrived (the cache's clock).
    timestamp: float


class _ChannelLog:
    """The cached messages of one channel, oldest first.

    A list read from :attr:`head`: dropping the oldest is O(1), and the
    list is compacted once half of it is dropped.
    """

    __slots__ = ("head", "items")

    def __init__(self) -> None:
        self.items: list[Message] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.items) - self.head

    def drop_oldest(self) -> None:
        self.head += 1
        if self.head > 64 and self.head * 2 > len(self.items):
            del self.items[: self.head]
            self.head = 0

    def first(self) -> Message:
        return self.items[self.head]

    def first_after(self, seq: int) -> Message | None:
        index = bisect.bisect_right(
            self.items, seq, lo=self.head, key=lambda message: message.seq
        )
        return self.items[index] if index < len(self.items) else None


class MessageCache:
    """The messages of one database's bus, for ``cache_timeout`` seconds.

    No I/O and no clock of its own: each call says what time it is.

    :param cache_timeout: seconds a message is kept.
    :param max_messages: most messages kept; the oldest go first.
    """

    def __init__(self, cache_timeout: float, max_messages: int) -> None:
        self.cache_timeout = cache_timeout
        self.max_messages = max_messages
        #: Messages dropped before their time to keep within max_messages.
        self.dropped = 0
        self._order: collections.deque[Message] = collections.deque()
        self._channels: dict[str, _ChannelLog] = {}
        # The cached messages of each id, oldest first: ids are uuid4, but
        # a poll looks for the first one on its channels, as trytond does.
        self._ids: dict[str, list[Message]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._order)

    def append(
        self, channel: str, content: dict[str, Any], message_id: str, now: float
    ) -> None:
        """Cache a message that arrived at *now*."""
        message = Message(next(self._seq), channel, content, message_id, now)
        self._order.append(message)
        self._channels.setdefault(channel, _ChannelLog()).items.append(message)
        self._ids.setdefault(message_id, []).append(message)
        self.expire(now)
        while len(self._order) > self.max_messages:
            self._drop_oldest()
            self.dropped += 1

    def expire(self, now: float) -> None:
        """Drop the messages older than ``cache_timeout`` at *now*."""
        oldest = now - self.cache_timeout
        while self._order and self._order[0].timestamp < oldest:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        message = self._order.popleft()
        log = self._channels[message.channel]
        log.drop_oldest()
        if not log:
            del self._channels[message.channel]
        occurrences = self._ids[message.message_id]
        del occurrences[0]  # the oldest: this one
        if not occurrences:
            del self._ids[message.message_id]

    def next(
        self, channels: Iterable[str], last_message: Any, now: float
    ) -> Message | None:
        """The message a poll of *channels* that last saw *last_message*
        gets now, or ``None``: see the module's invariants."""
        self.expire(now)
        channels = frozenset(channels)
        after = None
        if isinstance(last_message, str):
            for seen in self._ids.get(last_message, ()):
                if seen.channel in channels:
                    after = seen.seq
                    break
        best = None
        for channel in channels:
            log = self._channels.get(channel)
            if log is None:
                continue
            candidate = log.first() if after is None else log.first_after(after)
            if candidate is not None and (best is None or candidate.seq < best.seq):
                best = candidate
        return best


@dataclasses.dataclass
class _Database:
    """The bus of one database: its cache and its held polls."""

    cache: MessageCache
    #: The events of the held polls, by channel.
    waiting: dict[str, set[gevent.event.Event]] = dataclasses.field(
        default_factory=dict
    )
    held: int = 0


class TrytonBus:
    """The Tryton bus of the databases a server serves.

    Wiring (:class:`~oe_web_socketio.hosts.tryton.host.TrytonHost` does it,
    through the hooks of :class:`~oe_web_socketio.hosts.Host`): add
    :meth:`route` to the router, call :meth:`notify` for each ``NOTIFY`` on
    channel ``"bus"`` (from one greenlet per database, in order), report
    :meth:`stats` and call :meth:`close` at shutdown.

    :param config: the server's settings: its databases, the bus timeouts,
        the trusted proxies and the allowed origins.
    :param authenticator: validates the sessions of the polls; ``None``
        refuses every poll.
    :param allow_subscribe: whether polls are served (trytond's ``[bus]
        allow_subscribe``); when off every authenticated poll gets ``501``,
        which tells the web client to stop polling.
    :param clock: the clock of the message cache (seconds).
    """

    #: Largest request body read, in bytes (``413`` beyond): room for a
    #: list of channels far longer than :attr:`max_channels`, which is then
    #: refused with a reason.
    max_body_size = 1_048_576
    #: Most channels a poll may name (``400`` beyond).
    max_channels = 256
    #: Longest channel name, in characters (``400`` beyond): as a
    #: namespace's; trytond's are far shorter (``client:<uuid>``). With
    #: :attr:`max_channels`, what one held poll keeps is small.
    max_channel_length = 200
    #: Most messages cached per database; beyond, the oldest are dropped.
    max_cached_messages = 100_000

    def __init__(
        self,
        config: Config,
        authenticator: Authenticator | None,
        *,
        allow_subscribe: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.authenticator = authenticator
        self.allow_subscribe = allow_subscribe
        self.long_polling_timeout = config.bus_long_polling_timeout
        self.trusted_proxies = config.trusted_proxies
        self.allowed_origins = frozenset(config.cors_allowed_origins)
        self.clock = clock
        self._databases = {
            name: _Database(
                MessageCache(config.bus_cache_timeout, self.max_cached_messages)
            )
            for name in config.databases
        }
        self._closed = False

    def route(self) -> Route:
        """The ``POST /<database>/bus`` route."""
        return Route(PATH, self.endpoint, frozenset({"POST"}))

    # --- messages in

    def notify(self, database: str, payload: str) -> None:
        """Cache the message of a ``NOTIFY "bus"`` of *database* and wake
        the polls of its channel.

        :param payload: the text of the notification, as trytond's
            ``Bus.publish`` sends it.
        """
        bus = self._databases.get(database)
        if bus is None:
            logger.warning("Skipped a bus message of unserved database %r", database)
            return
        parsed = _parse_payload(payload)
        if isinstance(parsed, str):
            logger.warning(
                "Skipped a bus message on %r: %s: %.200r", database, parsed, payload
            )
            return
        channel, content, message_id = parsed
        bus.cache.append(channel, content, message_id, self.clock())
        for event in bus.waiting.pop(channel, ()):
            event.set()

    # --- polls

    def endpoint(self, request: Request) -> Response:
        """Answer a poll: see the module's invariants for the statuses."""
        database = str(request.path_args.get("database"))
        bus = self._databases.get(database)
        if bus is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not found")
        environ = request.environ
        origin = self._check_origin(environ)
        if self._closed:
            return _unavailable("the server is stopping")
        try:
            identity = self._authenticate(request, database)
        except DatabaseUnavailable as exc:
            address = auth.client_address(environ, self.trusted_proxies)
            logger.error("Cannot authenticate a bus poll from %s: %s", address, exc)
            return _unavailable("try again later")
        # The bus speaks of Tryton users, whose ids are integers.
        if identity is None or not isinstance(identity.uid, int):
            headers = []
            if environ.get("HTTP_X_REQUESTED_WITH") != "XMLHttpRequest":
                headers.append(("WWW-Authenticate", 'Basic realm="Tryton"'))
            return Response(HTTPStatus.UNAUTHORIZED, b"", tuple(headers))
        if not self.allow_subscribe:
            raise HTTPError(HTTPStatus.NOT_IMPLEMENTED, "the bus is not enabled")
        asked, last_message = self._read_poll(request)
        channels = own_channels(asked, identity.uid)
        others = sorted(
            channel
            for channel in asked
            if channel.startswith(USER_CHANNELS) and channel not in channels
        )
        if others:
            logger.warning(
                "Bus poll of %r on %r asked for channels of another user, "
                "given its own instead: %.200s",
                identity.login,
                database,
                ", ".join(others),
            )
        logger.debug(
            "Bus poll of %r on %r for %s since %r",
            identity.login,
            database,
            sorted(channels),
            last_message,
        )
        message = self.poll(bus, channels, last_message)
        answer = (
            EMPTY
            if message is None
            else {"message": message.content, "channel": message.channel}
        )
        headers = [] if origin is None else [*_cors_headers(origin)]
        return Response.json(answer, headers=headers)

    def poll(
        self, bus: _Database, channels: frozenset[str], last_message: Any
    ) -> Message | None:
        """The next message for a poll, waiting for it if need be."""
        message = bus.cache.next(channels, last_message, self.clock())
        if message is not None:
            return message
        event = gevent.event.Event()
        for channel in channels:
            bus.waiting.setdefault(channel, set()).add(event)
        bus.held += 1
        try:
            woken = event.wait(self.long_polling_timeout)
        finally:
            bus.held -= 1
            for channel in channels:
                events = bus.waiting.get(channel)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del bus.waiting[channel]
        if not woken or self._closed:
            return None
        return bus.cache.next(channels, last_message, self.clock())

    def _check_origin(self, environ: Mapping[str, Any]) -> str | None:
        """The ``Origin`` of the request, if any, once allowed as trytond
        allows it: the request's own host, or one of the allowed origins."""
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return None
        if origin != "null":
            try:
                netloc = urllib.parse.urlsplit(origin).netloc
            except ValueError:  # "http://[::1": not a URL, not the host
                netloc = None
            if netloc is not None and netloc == environ.get("HTTP_HOST"):
                return str(origin)
            if "*" in self.allowed_origins or origin in self.allowed_origins:
                return str(origin)
        raise HTTPError(HTTPStatus.FORBIDDEN, "origin not allowed")

    def _authenticate(self, request: Request, database: str) -> Identity | None:
        """The caller, or ``None`` when it must be refused, with one log
        line: ours for a session missing or malformed, the
        authenticator's for one it refuses (it logs each refusal).

        :raises DatabaseUnavailable: the session cannot be checked now.
        """
        address = auth.client_address(request.environ, self.trusted_proxies)
        try:
            credentials = auth.credentials_from_request(
                request.environ, None, SESSION_COOKIE
            )
            if credentials is None:
                raise AuthenticationError("no session")
            if self.authenticator is None:
                raise AuthenticationError("no authentication on this server")
        except AuthenticationError as exc:
            logger.warning("Refused bus poll on %r from %s: %s", database, address, exc)
            return None
        credentials = dataclasses.replace(credentials, database=database)
        try:
            return self.authenticator.authenticate(credentials, address)
        except AuthenticationError:
            return None  # logged by the authenticator

    def _read_poll(self, request: Request) -> tuple[list[str], Any]:
        """The channels and last message of the poll's body."""
        encoding = str(request.environ.get("HTTP_CONTENT_ENCODING", "identity"))
        if encoding.strip().lower() not in ("", "identity"):
            raise HTTPError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported Content-Encoding"
            )
        if "json" not in str(request.environ.get("CONTENT_TYPE", "")):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "not a JSON request")
        body = request.body(self.max_body_size)
        try:
            data = json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            raise HTTPError(
                HTTPStatus.BAD_REQUEST, "unable to read JSON request"
            ) from None
        if not isinstance(data, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        channels = data.get("channels", [])
        if not (
            isinstance(channels, list)
            and all(isinstance(channel, str) for channel in channels)
        ):
            raise HTTPError(
                HTTPStatus.BAD_REQUEST, "channels must be a list of strings"
            )
        if len(channels) > self.max_channels:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST,
                f"too many channels: {len(channels)} (at most {self.max_channels})",
            )
        longest = max(map(len, channels), default=0)
        if longest > self.max_channel_length:
            raise HTTPError(
                HTTPStatus.BAD_REQUEST,
                f"channel too long: {longest} characters "
                f"(at most {self.max_channel_length})",
            )
        return channels, data.get("last_message")

    # --- state

    def held_polls(self) -> int:
        """Polls held now, all databases together."""
        return sum(bus.held for bus in self._databases.values())

    def cached_messages(self) -> int:
        """Messages cached now, all databases together."""
        now = self.clock()
        for bus in self._databases.values():
            bus.cache.expire(now)
        return sum(len(bus.cache) for bus in self._databases.values())

    def stats(self) -> dict[str, dict[str, int]]:
        """By database: polls held, messages cached and messages dropped
        to keep within :attr:`max_cached_messages`."""
        now = self.clock()
        stats = {}
        for name, bus in self._databases.items():
            bus.cache.expire(now)
            stats[name] = {
                "polls": bus.held,
                "messages": len(bus.cache),
                "dropped": bus.cache.dropped,
            }
        return stats

    def close(self) -> None:
        """Answer every held poll the empty message, and later ones ``503``."""
        self._closed = True
        for bus in self._databases.values():
            waiting = list(bus.waiting.values())
            bus.waiting.clear()
            for events in waiting:
                for event in events:
                    event.set()


def own_channels(channels: Collection[str], uid: int) -> frozenset[str]:
    """The channels a poll of user *uid* asking for *channels* listens to:
    those of any user (:data:`USER_CHANNELS`) replaced by the caller's of
    the same prefix, and ``user:<uid>`` always, as trytond adds it."""
    prefixes = {"user:"}
    kept = set()
    for channel in channels:
        prefix = next((p for p in USER_CHANNELS if channel.startswith(p)), None)
        if prefix is None:
            kept.add(channel)
        else:
            prefixes.add(prefix)
    return frozenset(kept | {f"{prefix}{uid}" for prefix in prefixes})


def _parse_payload(payload: str) -> tuple[str, dict[str, Any], str] | str:
    """The channel, message and message id of a notification's *payload*,
    or what is wrong with it."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    channel = data.get("channel")
    content = data.get("message")
    if not isinstance(channel, str):
        return "no channel string"
    if not isinstance(content, dict):
        return "no message object"
    message_id = content.get("message_id")
    if not isinstance(message_id, str):
        return "no message_id string"
    return channel, content, message_id


#: Seconds a client is told to wait before it polls again after a 503.
RETRY_AFTER = 5


def _unavailable(reason: str) -> Response:
    """``503`` with ``Retry-After``: not the client's fault, so not logged
    as a refusal (the cause, if any, is logged once by the caller)."""
    return Response.json(
        {"error": reason},
        HTTPStatus.SERVICE_UNAVAILABLE,
        [("Retry-After", str(RETRY_AFTER))],
    )


def _cors_headers(origin: str) -> Iterable[tuple[str, str]]:
    """What trytond adds to the answer of a request with an ``Origin``."""
    yield ("Access-Control-Allow-Origin", origin)
    yield ("Vary", "Origin")
