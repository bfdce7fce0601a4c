"""Tests of :mod:`oe_web_socketio.listener`.

Two kinds: in this process, without PostgreSQL, a listener whose database
is out of reach (a Unix socket directory that does not exist: libpq fails
at once, as when PostgreSQL is down), which waits between two attempts
without blocking the others; and, against the appliance's PostgreSQL, a
listener in a process of its own patched for gevent as the server is
(listener_process.py), fed with real ``NOTIFY``\\ s. What the bridge makes
of the notifications is tested with real clients in tests/test_bridge.py.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import psycopg
import pytest
from oe_web_socketio.listener import Listener, State

pytestmark = pytest.mark.timeout(60)

NOWHERE = "postgresql://nobody@/db?host=/nonexistent/oe_web_socketio"

#: Seconds a test waits for an event of the listener process.
WAIT = 10.0


def never(conn: psycopg.Connection, payloads: list[str]) -> None:
    raise AssertionError("no notification can come")


# -- in this process, no PostgreSQL --------------------------------------------


def test_a_listener_needs_a_channel():
    with pytest.raises(ValueError, match="at least one channel"):
        Listener("db", NOWHERE, {})


def test_out_of_reach_it_retries_with_a_doubling_delay(caplog):
    listener = Listener("db", NOWHERE, {"one": never})
    listener.backoff_min, listener.backoff_max = 0.01, 0.04
    assert listener.health()["state"] == "starting"
    with caplog.at_level(logging.WARNING, logger="oe_web_socketio.listener"):
        listener.start()
        listener.start()  # at most one loop
        with gevent.Timeout(WAIT):
            while listener.failures < 5:
                gevent.sleep(0.01)
        listener.stop()
    health = listener.health()
    assert health["state"] == State.STOPPED.value == "stopped"
    assert health["failures"] >= 5
    assert health["listening_since"] is None
    assert "/nonexistent/oe_web_socketio" in health["last_error"]
    assert "\n" not in health["last_error"]
    delays = [
        float(re.search(r"connecting again in (\S+) s", r.getMessage())[1])
        for r in caplog.records
    ]
    assert delays[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert repr(listener) == "<Listener db stopped>"


def test_a_stopped_listener_stays_stopped():
    listener = Listener("db", NOWHERE, {"one": never})
    listener.backoff_min = 0.01
    listener.start()
    with gevent.Timeout(WAIT):
        while listener.failures < 1:
            gevent.sleep(0.01)
    listener.stop()
    failures = listener.failures
    gevent.sleep(0.05)
    assert listener.failures == failures
    assert listener.state is State.STOPPED


# -- against the appliance's PostgreSQL -----------------------------------------


class ListenerProcess:
    """listener_process.py, running; its events and log lines, as they come."""

    def __init__(self, conninfo: str) -> None:
        self.application_name = f"oe_web_socketio test {uuid.uuid4().hex[:8]}"
        script = Path(__file__).with_name("listener_process.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script), conninfo, self.application_name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[list[Any]] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_events(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)

    def next(self) -> list[Any]:
        try:
            return self.events.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no event; log:\n{''.join(self.log)}") from None

    def logged(self, text: str) -> bool:
        """Whether a log line holds *text*, waiting for it a while (stderr
        is read apart from stdout: a line may come after later events)."""
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in self.log):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=WAIT)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture(scope="module")
def conninfo(scratch_database) -> str:
    """A database of this module on the appliance's PostgreSQL (``LISTEN``
    and ``NOTIFY`` need no table)."""
    uri, name = scratch_database
    return psycopg.conninfo.make_conninfo(uri, dbname=name)


@pytest.fixture(scope="module")
def listening(conninfo) -> Iterator[tuple[ListenerProcess, int]]:
    """One listener process for the module's tests, and the backend pid of
    its connection once it listens."""
    process = ListenerProcess(conninfo)
    event = process.next()
    assert event[0] == "connected"
    yield process, event[1]
    process.stop()


@pytest.fixture
def notify(conninfo) -> Iterator[Any]:
    """``notify((channel, payload), ...)``: one transaction of NOTIFYs."""
    with psycopg.connect(conninfo, autocommit=True) as conn:

        def send(*notifications: tuple[str, str]) -> None:
            with conn.transaction():
                for channel, payload in notifications:
                    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

        yield send


def received(process: ListenerProcess, count: int) -> dict[str, list[str]]:
    """The payloads of the next *count* notifications, by channel."""
    by_channel: dict[str, list[str]] = {}
    while sum(map(len, by_channel.values())) < count:
        kind, channel, payloads = process.next()
        assert kind == "batch"
        by_channel.setdefault(channel, []).extend(payloads)
    return by_channel


def test_notifications_reach_the_handler_of_their_channel_in_order(listening, notify):
    process, _ = listening
    notify(("one", "a1"), ("two", "b1"), ("one", "a2"), ("other", "x"))
    notify(("one", "a3"))
    assert received(process, 4) == {"one": ["a1", "a2", "a3"], "two": ["b1"]}


def test_a_failing_handler_is_logged_and_the_loop_goes_on(listening, notify):
    process, _ = listening
    notify(("one", "raise"))
    notify(("one", "after"), ("two", "after"))
    assert received(process, 2) == {"one": ["after"], "two": ["after"]}
    assert process.logged("Error in handling 1 notification(s) on 'one' of 'test'")


def test_a_terminated_connection_is_opened_again(listening, notify, conninfo):
    process, pid = listening
    with psycopg.connect(conninfo, autocommit=True) as admin:
        (terminated,) = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (process.application_name,),
        ).fetchone()
    assert terminated
    kind, new_pid = process.next()
    assert (kind, new_pid != pid) == ("connected", True)
    notify(("two", "back"))
    assert received(process, 1) == {"two": ["back"]}
    assert process.logged("connecting again in 0.05 s")
