"""What a long-polling handler gets: :class:`LongPollingRequest`, the models
through the host's :class:`ORM` in one read-only transaction at a time, and
the waits (see the package's docstring for the protocol).

Invariants: a handler waiting in :meth:`LongPollingRequest.wait` holds no
cursor (it ends the transaction first); the models are used in the
handler's greenlet only; :data:`current` is the request of the handler
running in this greenlet.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import greenlet

from oe_web_socketio import pubsub
from oe_web_socketio.auth import Identity
from oe_web_socketio.exceptions import (
    AuthenticationError,
    PollTimeout,
)
from oe_web_socketio.hosts import Host
from oe_web_socketio.routing import Request

if TYPE_CHECKING:
    from oe_web_socketio.pubsub import Broker


class ORM(Protocol):
    """The models a host gives the routes (:meth:`~oe_web_socketio.hosts.Host.orm`;
    Tryton's: :class:`~oe_web_socketio.hosts.tryton.orm.TrytonORM`)."""

    def transaction(
        self,
        database: str,
        uid: int,
        *,
        request: Mapping[str, Any] | None = None,
        statement_timeout: int | None = None,
    ) -> AbstractContextManager[Any]:
        """A read-only transaction on *database* as user *uid*, ended (and
        its cursor free) when the ``with`` block ends, whatever happened.

        :param request: what the host tells its models of the request
            (:meth:`~oe_web_socketio.hosts.Host.request_context`).
        :param statement_timeout: seconds each statement may run.
        :raises PoolTimeout: no cursor came free in time.
        :raises DatabaseUnavailable: the database is out of reach.
        """
        ...

    def models(self, database: str) -> Any:
        """The models of *database*, by name (``get(name)``)."""
        ...


#: The request of the handler running in this greenlet.
current: contextvars.ContextVar[LongPollingRequest] = contextvars.ContextVar(
    "oe_web_socketio.longpolling.request"
)


def get_timeout() -> float:
    """Seconds the handler running in this greenlet may wait for news, in
    all (``longpolling_timeout``).

    :raises RuntimeError: not called from a long-polling handler.
    """
    try:
        return current.get().get_timeout()
    except LookupError:
        raise RuntimeError("get_timeout() is for long-polling handlers") from None


class LongPollingRequest:
    """What a long-polling handler gets.

    :ivar http: the :class:`~oe_web_socketio.routing.Request` (``environ``,
        ``method``, ``path``, ``path_args``).
    :ivar database: the database of the request.
    :ivar identity: the :class:`~oe_web_socketio.auth.Identity` of an
        authenticated user, else ``None``.
    :ivar uid: the user's id, ``None`` unless authenticated.
    :ivar login: the user's login, ``None`` unless authenticated.
    :ivar address: the client's address (as Tryton binds sessions to it).
    :ivar params: the keyword arguments the handler is called with.
    :ivar deadline: when waiting ends (:func:`time.monotonic`).

    The models (:meth:`model`, :meth:`cursor`, :attr:`context`) need an
    authenticated user; the first use opens a read-only transaction as
    that user, which lasts until :meth:`wait`, :meth:`release` or the end
    of the handler, whichever comes first; the next use opens a new one
    (that sees what was committed meanwhile). Records read in one
    transaction must not be used in the next: read them again. Use the
    models in the handler's own greenlet only.
    """

    def __init__(
        self,
        http: Request,
        *,
        database: str,
        identity: Identity | None,
        address: str | None,
        params: Mapping[str, Any],
        timeout: float,
        orm: ORM | None,
        started: float | None = None,
        broker: Broker = pubsub.NULL,
        host: Host | None = None,
    ) -> None:
        self.broker = broker
        self._host = host
        self.http = http
        self.database = database
        self.identity = identity
        self.uid = identity.uid if identity is not None else None
        self.login = identity.login if identity is not None else None
        self.address = address
        self.params = dict(params)
        self._timeout = timeout
        self.deadline = (time.monotonic() if started is None else started) + timeout
        self._orm = orm
        self._scope: contextlib.ExitStack | None = None
        self._transaction: Any = None
        self._owner: Any = None
        self._context: dict[str, Any] | None = None

    @property
    def environ(self) -> Mapping[str, Any]:
        return self.http.environ

    @property
    def method(self) -> str:
        return self.http.method

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    def get_timeout(self) -> float:
        """Seconds the handler may wait for news, in all."""
        return self._timeout

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once past)."""
        return self.deadline - time.monotonic()

    # -- the models -------------------------------------------------------

    @property
    def context(self) -> dict[str, Any]:
        """The user's context (language…, as Tryton's preferences give
        it), ``{}`` unless authenticated (or without trytond). The first
        read opens the transaction."""
        if self.identity is None or self._orm is None:
            return {}
        if self._context is None:
            self.transaction()
        assert self._context is not None
        return dict(self._context)

    def model(self, name: str) -> Any:
        """The Tryton model *name* (e.g. ``res.user``), usable with the
        user's access rights in the request's read-only transaction.

        :raises AuthenticationError: the request is not authenticated.
        :raises KeyError: no such model in the database.
        """
        self.transaction()
        return self._orm.models(self.database).get(name)  # type: ignore[union-attr]

    def cursor(self) -> Any:
        """A cursor of the request's read-only transaction, for SQL.

        :raises AuthenticationError: the request is not authenticated.
        """
        return self.transaction().connection.cursor()

    def transaction(self) -> Any:
        """The request's :class:`trytond.transaction.Transaction`, opened if
        needed.

        :raises AuthenticationError: the request is not authenticated.
        :raises PoolTimeout: every cursor stayed in use ``pool_timeout``
            seconds (the client gets ``503``).
        :raises DatabaseUnavailable: the database is out of reach
            (``503``).
        :raises RuntimeError: called from another greenlet than the one
            that opened it, or the server has no trytond configuration.
        """
        if self.identity is None:
            raise AuthenticationError("the models need an authenticated user")
        uid = self.identity.uid
        if not isinstance(uid, int):
            raise AuthenticationError("the models need a Tryton user")
        current = greenlet.getcurrent()
        if self._transaction is not None:
            if current is not self._owner:
                raise RuntimeError("use the models in the handler's greenlet only")
            return self._transaction
        if self._orm is None:
            raise RuntimeError("the models need the server's trytond_config")
        scope = contextlib.ExitStack()
        transaction = scope.enter_context(
            self._orm.transaction(
                self.database,
                uid,
                request=self._request_context(),
                statement_timeout=math.ceil(self._timeout),
            )
        )
        self._scope, self._transaction, self._owner = scope, transaction, current
        if self._context is None:
            self._context = {
                key: value
                for key, value in transaction.context.items()
                if not key.startswith("_")
            }
        return transaction

    def release(self) -> None:
        """End the transaction, if one is open: rolled back, its cursor
        free. Never raises (see :mod:`~oe_web_socketio.hosts.tryton.orm`)."""
        scope, self._scope, self._transaction, self._owner = (
            self._scope,
            None,
            None,
            None,
        )
        if scope is not None:
            scope.close()

    def _request_context(self) -> Mapping[str, Any] | None:
        """What the models are told of the request (for Tryton, trytond's
        ``_request`` context), as the host says."""
        if self._host is None:
            return None
        return self._host.request_context(self.environ, self.address)

    # -- waiting ----------------------------------------------------------

    def wait(self, waitable: Any, timeout: float | None = None) -> Any:
        """End the transaction (no cursor is held while waiting), then wait
        for *waitable*, at most *timeout* seconds and never beyond the
        deadline.

        *waitable* may be:

        * a gevent object (``Event``, ``AsyncResult``, ``Greenlet``…:
          anything :func:`gevent.wait` takes): the result is its value
          (``get()``) when it has one, else ``True``;
        * a callable taking the seconds it may wait: the result is what it
          returns; it raises :class:`TimeoutError` when the time is over;
        * an object with a ``wait(timeout)`` method returning whether it
          happened (:class:`threading.Event`): the result is ``True``.

        :raises PollTimeout: the time is over (uncaught, the client gets
            ``204 No Content``).
        """
        self.release()
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        if limit <= 0:
            raise PollTimeout("no news before the deadline")
        if hasattr(waitable, "rawlink"):
            import gevent

            if not gevent.wait([waitable], timeout=limit):
                raise PollTimeout(f"no news within {limit:.3g} s")
            getter = getattr(waitable, "get", None)
            return getter(block=False) if getter is not None else True
        if callable(waitable):
            try:
                return waitable(limit)
            except TimeoutError as exc:
                raise PollTimeout(f"no news within {limit:.3g} s") from exc
        if hasattr(waitable, "wait"):
            if not waitable.wait(limit):
                raise PollTimeout(f"no news within {limit:.3g} s")
            return True
        raise TypeError(f"cannot wait for {waitable!r}")

    def listen(
        self, channel: str, since: Any = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Wait for messages published in the database on *channel* (see
        :mod:`oe_web_socketio.outbox`): those after the position *since*
        the client saw last, at once if there are some, else the next one.
        Like :meth:`wait`, no cursor is held while waiting.

        :returns: ``[{"message", "channel", "position"}, …]``, in order;
            the client passes the last ``position`` back as *since*.
        :raises PollTimeout: nothing came in time (``204``).
        :raises DatabaseUnavailable: the server has no database bridge,
            or it is not connected (``503``).
        """
        broker, database = self.broker, self.database
        messages = self.wait(
            lambda seconds: broker.wait_messages(database, channel, since, seconds),
            timeout,
        )
        return [
            {"message": m.payload, "channel": m.channel, "position": m.token}
            for m in messages
        ]
