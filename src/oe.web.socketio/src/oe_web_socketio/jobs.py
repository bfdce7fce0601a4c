"""Greenlets of a socket: those it spawns and its running handlers.

The part of :class:`~oe_web_socketio.namespace.Namespace` that owns a
socket's greenlets.

Invariants:

* every greenlet :meth:`Jobs.spawn` starts, and every event handler still
  running (the dispatcher owns and disowns it), is killed when the socket
  disconnects, after at most ``kill_timeout`` seconds; survivors are
  logged;
* an idle socket holds no set of greenlets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import gevent

logger = logging.getLogger("oe_web_socketio.namespace")


class Jobs:
    """The greenlets of a socket (a part of
    :class:`~oe_web_socketio.namespace.Namespace`)."""

    connected: bool
    kill_timeout: ClassVar[float]
    _greenlets: set[gevent.Greenlet] | None

    if TYPE_CHECKING:

        def report_error(self, exc: BaseException, during: str) -> None: ...

    def spawn(
        self, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> gevent.Greenlet:
        """Run ``function(*args, **kwargs)`` in a greenlet of this socket.

        The greenlet is killed when the socket disconnects. If *function*
        raises, the exception is logged and given to the ``on_error``
        hooks, and the greenlet ends with the value ``None``.

        :raises RuntimeError: the socket is disconnecting or gone.
        """
        if not self.connected:
            raise RuntimeError(f"cannot spawn in {self!r}: it is disconnected")
        greenlet = gevent.Greenlet(self._run_spawned, function, args, kwargs)
        self.own_greenlet(greenlet)
        greenlet.link(self.disown_greenlet)
        greenlet.start()
        return greenlet

    def own_greenlet(self, greenlet: gevent.Greenlet) -> None:
        """Count *greenlet* as one of this socket's: it is killed when the
        socket disconnects, until it is disowned."""
        if self._greenlets is None:
            self._greenlets = set()
        self._greenlets.add(greenlet)

    def disown_greenlet(self, greenlet: gevent.Greenlet) -> None:
        """Stop counting *greenlet* as one of this socket's."""
        if self._greenlets is not None:
            self._greenlets.discard(greenlet)
            if not self._greenlets:
                # An idle socket keeps no set.
                self._greenlets = None

    def _run_spawned(
        self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - logged, see the docstring
            self.report_error(exc, f"greenlet {getattr(function, '__name__', '?')}")
            return None

    @property
    def greenlet_count(self) -> int:
        """Greenlets of this socket alive: spawned, and handlers running."""
        return sum(1 for greenlet in self._greenlets or () if not greenlet.dead)

    def kill_local_jobs(self) -> None:
        """Kill the greenlets of this socket but the calling one; wait for
        them up to :attr:`kill_timeout` seconds."""
        current = gevent.getcurrent()
        owned = self._greenlets or ()
        greenlets = [g for g in owned if g is not current and not g.dead]
        self._greenlets = {current} if current in owned else None
        if not greenlets:
            return
        gevent.killall(greenlets, block=True, timeout=self.kill_timeout)
        survivors = sum(1 for greenlet in greenlets if not greenlet.dead)
        if survivors:
            logger.warning(
                "%d greenlet(s) of %r still alive %g s after being killed",
                survivors,
                self,
                self.kill_timeout,
            )
