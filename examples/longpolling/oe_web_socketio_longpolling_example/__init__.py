"""Example long-polling routes, served by the appliance under
``/longpolling/example/`` (entry point group ``oe_web_socketio.longpolling``).

* ``GET /longpolling/example/hello/<name>`` (anonymous, ``http`` mode):
  ``Hello, <name>!`` as text.
* ``GET /longpolling/example/whoami`` (Tryton session required): the
  user's id, login, name and language, read through the ORM with the
  user's access rights.
* ``GET /longpolling/example/tick`` (anonymous): waits for the next tick
  of a clock shared by every client of the process (every
  :attr:`Clock.interval` seconds) and answers its time, ``{"tick":
  "2025-01-01T12:00:05+00:00"}``: many clients wait on one gevent event,
  and none holds a database cursor meanwhile.

* ``GET /longpolling/example/notices?since=<position>`` (Tryton session
  required): the messages ERP code published on the channel ``notices``
  (``publish("notices", …)`` of the Tryton module ``web_socketio``) since
  the position the client saw last, or the next one:
  ``[{"message", "channel", "position"}, …]``; the client passes the last
  ``position`` back as ``since``, so it misses none between two polls.

From a page, with the project's JavaScript client (js/longpolling.js)::

    start_longpolling(session, "/example/tick", {}, (data) => show(data.tick));
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import gevent
import gevent.event
from oe_web_socketio.longpolling import LongPollingRequest, longpolling

__all__ = ["Clock", "clock", "hello", "notices", "tick", "whoami"]


class Clock:
    """A tick every :attr:`interval` seconds, for whoever waits for it.

    The ticking greenlet starts with the first waiter and runs for the
    life of the process.
    """

    #: Seconds between two ticks.
    interval = 5.0

    def __init__(self) -> None:
        self._next = gevent.event.AsyncResult()
        self._greenlet: gevent.Greenlet | None = None

    def next_tick(self) -> gevent.event.AsyncResult:
        """The next tick: its value is the time it happened (ISO 8601, UTC)."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        return self._next

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            current, self._next = self._next, gevent.event.AsyncResult()
            current.set(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


#: The clock of this process.
clock = Clock()


@longpolling.route("/example/hello/<name>", mode="http", mustbeauthenticated=False)
def hello(request: LongPollingRequest, name: str) -> str:
    return f"Hello, {name}!"


@longpolling.route("/example/whoami")
def whoami(request: LongPollingRequest) -> dict[str, Any]:
    user = request.model("res.user")(request.uid)
    return {
        "uid": request.uid,
        "login": request.login,
        "name": user.name,
        "language": request.context.get("language"),
    }


@longpolling.route("/example/tick", mustbeauthenticated=False)
def tick(request: LongPollingRequest) -> dict[str, str]:
    # Past the long-polling timeout, wait() raises PollTimeout: the client
    # gets 204 and polls again.
    return {"tick": request.wait(clock.next_tick())}


@longpolling.route("/example/notices")
def notices(request: LongPollingRequest, since: str | None = None) -> list[Any]:
    return request.listen("notices", since)
