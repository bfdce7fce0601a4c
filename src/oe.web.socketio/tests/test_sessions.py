"""Tests of :mod:`oe_web_socketio.sessions`: the watch of connected sessions.

The sockets here are stand-ins with the four members :class:`SessionWatch`
uses (``identity``, ``connected``, ``recheck()``, ``error()`` and
``disconnect()``); what a real socket's ``recheck`` answers is tested with
the namespaces (test_namespace.py) and end to end with Tryton's sessions
(tests/test_realtime.py).
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
import pytest
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.protocol import AUTHENTICATION_FAILED
from oe_web_socketio.sessions import SESSION_ENDED, SessionWatch

pytestmark = pytest.mark.timeout(10)


class Socket:
    """What the watch sees of a connected socket; *valid* is what its
    session check answers (``True``, ``False``, ``None``: cannot tell) or
    an exception it raises."""

    def __init__(self, name: str, valid: Any = True, identity: Any = "user") -> None:
        self.name = name
        self.valid = valid
        self.identity = identity
        self.connected = True
        self.checks = 0
        self.errors: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"<Socket {self.name}>"

    def recheck(self) -> bool | None:
        self.checks += 1
        if isinstance(self.valid, BaseException):
            raise self.valid
        return self.valid

    def error(self, code: str, message: str) -> None:
        self.errors.append((code, message))

    def disconnect(self) -> None:
        self.connected = False


class Dispatcher:
    def __init__(self, *sockets: Socket) -> None:
        self.sockets = {socket.name: socket for socket in sockets}


def watch_of(*dispatchers: Dispatcher, interval: float = 60.0) -> SessionWatch:
    directory = SocketDirectory()
    for i, dispatcher in enumerate(dispatchers):
        directory.add(f"/ns{i}", dispatcher)
    return SessionWatch(directory, interval)


def test_a_session_that_ended_is_told_and_disconnected(caplog):
    gone, kept = Socket("gone", valid=False), Socket("kept")
    watch = watch_of(Dispatcher(gone, kept))
    with caplog.at_level(logging.INFO, logger="oe_web_socketio.sessions"):
        assert watch.check_all() == 1
    assert gone.errors == [(AUTHENTICATION_FAILED, SESSION_ENDED)]
    assert not gone.connected
    assert kept.connected and kept.errors == []
    assert watch.stats() == {"interval": 60.0, "ended": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "Session of <Socket gone> ended: disconnecting it"
    ]


def test_a_check_that_cannot_be_made_disconnects_nobody():
    unknown = Socket("unknown", valid=None)
    assert watch_of(Dispatcher(unknown)).check_all() == 0
    assert unknown.connected and unknown.errors == []


def test_anonymous_and_disconnected_sockets_are_not_checked():
    anonymous = Socket("anonymous", valid=False, identity=None)
    left = Socket("left", valid=False)
    left.connected = False
    assert watch_of(Dispatcher(anonymous, left)).check_all() == 0
    assert anonymous.checks == left.checks == 0


def test_a_socket_gone_during_its_check_is_not_disconnected_again():
    class Leaving(Socket):
        def recheck(self) -> bool | None:
            self.connected = False  # disconnected while its query ran
            return False

    leaving = Leaving("leaving")
    watch = watch_of(Dispatcher(leaving))
    assert watch.check_all() == 0
    assert leaving.errors == [] and watch.ended == 0


def test_a_failing_check_is_logged_and_the_others_go_on(caplog):
    broken = Socket("broken", valid=RuntimeError("boom"))
    gone = Socket("gone", valid=False)
    with caplog.at_level(logging.ERROR, logger="oe_web_socketio.sessions"):
        ended = watch_of(Dispatcher(broken), Dispatcher(gone)).check_all()
    assert ended == 1
    assert broken.connected and not gone.connected
    (record,) = caplog.records
    assert record.getMessage() == "Cannot check the session of <Socket broken>"
    assert record.exc_info is not None


def test_sockets_that_connect_during_a_round_do_not_break_it():
    dispatcher = Dispatcher()

    class Joining(Socket):
        def recheck(self) -> bool | None:
            # A socket connects while this one is checked (between the
            # queries, the other greenlets run).
            dispatcher.sockets["new"] = Socket("new", valid=False)
            return True

    dispatcher.sockets["first"] = Joining("first")
    watch = watch_of(dispatcher)
    assert watch.check_all() == 0
    assert dispatcher.sockets["new"].checks == 0  # the next round's
    assert watch.check_all() == 1


def test_the_watch_checks_every_interval_and_survives_a_failed_round(caplog):
    gone = Socket("gone", valid=False)
    rounds: list[int] = []

    class FailingFirst(SocketDirectory):
        __slots__ = ()

        def sockets(self) -> list[Any]:
            rounds.append(len(rounds))
            if len(rounds) == 1:
                raise RuntimeError("the first round fails")
            return super().sockets()

    directory = FailingFirst()
    directory.add("/", Dispatcher(gone))
    watch = SessionWatch(directory, interval=0.01)
    watch.start()
    try:
        with gevent.Timeout(5):
            while gone.connected:
                gevent.sleep(0.01)
    finally:
        watch.stop()
    assert len(rounds) >= 2
    assert watch.ended == 1
    assert "The check of connected sessions failed" in caplog.text
    after = len(rounds)
    gevent.sleep(0.05)
    assert len(rounds) == after  # stopped
