"""The cursor budget of the models (:class:`FairGate`) and trytond's URI.

The gate is tested with threads here (unpatched, :mod:`threading` is the
real one) and with greenlets in a patched interpreter, where it must also
survive waiters killed by ``gevent.Timeout`` or ``Greenlet.kill()``.
trytond's transactions themselves are tested against a real database in
tests/test_longpolling.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from oe_web_socketio.hosts.tryton_orm import (
    APPLICATION_NAME,
    FairGate,
    GateStats,
    GateTimeout,
    TrytonORM,
    orm_uri,
)


def wait_until(probe, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s")
        time.sleep(0.005)


def test_gate_lends_up_to_its_size_then_times_out():
    gate = FairGate(2)
    gate.acquire(1)
    gate.acquire(1)
    assert gate.stats() == GateStats(in_use=2, waiting=0)
    with pytest.raises(GateTimeout):
        gate.acquire(0.01)
    assert gate.stats() == GateStats(in_use=2, waiting=0)
    gate.release()
    gate.acquire(0.01)
    gate.release()
    gate.release()
    assert gate.stats() == GateStats(in_use=0, waiting=0)
    with pytest.raises(RuntimeError, match="released more often"):
        gate.release()


def test_gate_serves_waiters_in_arrival_order():
    gate = FairGate(1)
    gate.acquire(1)
    served: list[int] = []

    def waiter(number: int) -> None:
        gate.acquire(10)
        served.append(number)
        gate.release()

    threads = []
    for number in range(5):
        thread = threading.Thread(target=waiter, args=(number,))
        thread.start()
        threads.append(thread)
        # The next one arrives only once this one waits.
        wait_until(lambda n=number: gate.stats().waiting == n + 1)
    gate.release()
    for thread in threads:
        thread.join(10)
    assert served == [0, 1, 2, 3, 4]
    assert gate.stats() == GateStats(in_use=0, waiting=0)


def test_a_released_slot_goes_to_the_waiter_not_to_a_newcomer():
    gate = FairGate(1)
    gate.acquire(1)
    got = threading.Event()

    def waiter() -> None:
        gate.acquire(10)
        got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: gate.stats().waiting == 1)
    gate.release()
    # Handed to the waiter at once: nothing is free for this caller, even
    # if the waiter has not run yet.
    with pytest.raises(GateTimeout):
        gate.acquire(0.01)
    thread.join(10)
    assert got.is_set()
    assert gate.stats() == GateStats(in_use=1, waiting=0)


class InterruptedAfterTurn(threading.Event):
    """A turn whose waiter is interrupted (a BaseException) just after the
    slot was handed to it, as a ``gevent.Timeout`` may be."""

    def wait(self, timeout=None):
        super().wait(timeout)
        raise KeyboardInterrupt


class InterruptedGate(FairGate):
    def _new_turn(self) -> threading.Event:
        return InterruptedAfterTurn()


def test_a_waiter_interrupted_as_the_slot_comes_passes_it_on():
    gate = InterruptedGate(1)
    gate.acquire(1)
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            gate.acquire(10)
        except BaseException as exc:  # noqa: BLE001 - recorded
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: gate.stats().waiting == 1)
    gate.release()
    thread.join(10)
    assert [type(exc) for exc in outcome] == [KeyboardInterrupt]
    # Not lost: the slot handed to the interrupted waiter is free again.
    assert gate.stats() == GateStats(in_use=0, waiting=0)
    gate.acquire(0.01)


def test_gate_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        FairGate(0)


GREENLET_SCRIPT = """
from oe_web_socketio.patch import patch
patch()
import gevent
from oe_web_socketio.hosts.tryton_orm import FairGate, GateStats

gate = FairGate(1)
gate.acquire(1)

# A waiter killed while it waits leaves the queue.
killed = gevent.spawn(gate.acquire, 30)
gevent.sleep(0)
assert gate.stats() == GateStats(1, 1), gate.stats()
killed.kill()
assert gate.stats() == GateStats(1, 0), gate.stats()

# A waiter whose gevent.Timeout fires leaves the queue.
def timed_out():
    with gevent.Timeout(0.01):
        gate.acquire(30)
late = gevent.spawn(timed_out)
late.join()
assert isinstance(late.exception, gevent.Timeout), late.exception
assert gate.stats() == GateStats(1, 0), gate.stats()

gate.release()
assert gate.stats() == GateStats(0, 0), gate.stats()

# Waiting costs no CPU: a ticker runs while 100 greenlets wait.
gate.acquire(1)
ticks = []
def ticker():
    for _ in range(5):
        ticks.append(1)
        gevent.sleep(0.001)
def user():
    gate.acquire(30)
    gate.release()
users = [gevent.spawn(user) for _ in range(100)]
gevent.spawn(ticker).join(5)
assert len(ticks) == 5 and gate.stats() == GateStats(1, 100), gate.stats()
gate.release()
gevent.joinall(users, timeout=5)
assert all(u.successful() for u in users)
assert gate.stats() == GateStats(0, 0), gate.stats()
print("ok")
"""


def test_gate_under_gevent_survives_killed_and_timed_out_waiters():
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(GREENLET_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "postgresql://tryton@/?host=/var/run/postgresql&port=5432",
            (
                "postgresql://tryton@/?host=%2Fvar%2Frun%2Fpostgresql&port=5432"
                "&application_name=oe_web_socketio%2Form"
                "&options=-c%20default_transaction_read_only%3Don"
            ),
        ),
        (
            "postgresql://u:p@db:5433/ignored?application_name=x&options=-c%20a%3Db",
            (
                "postgresql://u:p@db:5433/ignored?application_name=oe_web_socketio%2Form"
                "&options=-c%20default_transaction_read_only%3Don"
            ),
        ),
        (
            "postgresql://db",
            (
                "postgresql://db?application_name=oe_web_socketio%2Form"
                "&options=-c%20default_transaction_read_only%3Don"
            ),
        ),
    ],
)
def test_orm_uri_names_the_connections_and_makes_them_read_only(uri, expected):
    assert orm_uri(uri) == expected
    assert APPLICATION_NAME == "oe_web_socketio/orm"


def test_transactions_only_on_served_databases():
    orm = TrytonORM("/nonexistent.conf", ["oe"], 2, 1.0)
    with (
        pytest.raises(ValueError, match="'other' is not served"),
        orm.transaction("other", 1),
    ):
        pass


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"max_cursor": 0}, "max_cursor"), ({"timeout": 0}, "timeout")],
)
def test_orm_arguments_are_checked(kwargs, words):
    arguments = {"max_cursor": 2, "timeout": 1.0, **kwargs}
    with pytest.raises(ValueError, match=words):
        TrytonORM("/x.conf", ["oe"], arguments["max_cursor"], arguments["timeout"])
