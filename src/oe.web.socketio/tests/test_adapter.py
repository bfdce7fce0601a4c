"""Tests of :mod:`oe_web_socketio.adapter`: the queue of an adapter's
messages for one socket, in process.

The queue waits on a gevent event: these tests run it in pytest's process,
unpatched, and offer messages from greenlets (the hub runs while the test
waits on the event). That the bridge fills the queues, and a namespace
consumes them with acknowledgements, is tested with real clients in
tests/test_bridge.py.
"""

from __future__ import annotations

import dataclasses
import logging

import gevent
import pytest
from oe_web_socketio.adapter import Adapter, AdapterQueue, Message

pytestmark = pytest.mark.timeout(10)

#: A guard around every wait of these tests: a take that should return at
#: once, or after a short timeout, fails the test instead of hanging it.
GUARD = 5.0


def message(position: int, payload=None, channel: str = "orders") -> Message:
    return Message(
        "db", position, f"epoch:{position}", channel, payload or {"n": position}
    )


class Everything(Adapter):
    channel = "orders"


class EvenOnly(Adapter):
    """Takes the messages at even positions, with its own argument."""

    channel = "orders"

    def get(self, messages, *args):
        self.args = args
        return [m for m in messages if m.position % 2 == 0]


class Copies(Adapter):
    """Breaks the rule: returns equal copies, not the messages given."""

    channel = "orders"

    def get(self, messages, *args):
        return [dataclasses.replace(m) for m in messages]


class Foreign(Adapter):
    channel = "orders"

    def get(self, messages, *args):
        return [*messages, message(999)]


def take(queue, adapter, *args, timeout=0.0):
    with gevent.Timeout(GUARD):
        return queue.take(adapter, args, timeout)


def positions(messages):
    return [m.position for m in messages]


def test_take_returns_what_is_pending_in_order():
    queue = AdapterQueue()
    for position in (1, 2, 3):
        queue.offer(message(position))
    assert positions(take(queue, Everything(None))) == [1, 2, 3]


def test_what_was_taken_comes_again_until_validated():
    queue, adapter = AdapterQueue(), Everything(None)
    queue.offer(message(1))
    first = take(queue, adapter)
    queue.offer(message(2))
    # Not validated: the same messages, even though another one waits.
    assert take(queue, adapter) == first
    queue.validate(False)
    assert take(queue, adapter) == first
    queue.validate()
    assert positions(take(queue, adapter)) == [2]
    queue.validate()
    assert take(queue, adapter) == []


def test_take_returns_a_copy_of_what_it_offers():
    queue, adapter = AdapterQueue(), Everything(None)
    queue.offer(message(1))
    taken = take(queue, adapter)
    taken.clear()
    assert positions(take(queue, adapter)) == [1]


def test_take_times_out_with_an_empty_list():
    queue = AdapterQueue()
    assert take(queue, Everything(None), timeout=0.05) == []
    assert queue.offered == []


def test_take_waits_for_a_message_offered_later():
    queue = AdapterQueue()
    later = gevent.spawn_later(0.02, queue.offer, message(7))
    try:
        assert positions(take(queue, Everything(None), timeout=GUARD - 1)) == [7]
    finally:
        later.kill()


def test_take_without_timeout_waits_for_a_message():
    queue = AdapterQueue()
    later = gevent.spawn_later(0.02, queue.offer, message(8))
    try:
        assert positions(take(queue, Everything(None), timeout=None)) == [8]
    finally:
        later.kill()


def test_messages_the_adapter_leaves_are_consumed_and_waiting_goes_on():
    queue, adapter = AdapterQueue(), EvenOnly(None)
    queue.offer(message(1))
    queue.offer(message(3))
    # Nothing chosen: it waits for more, up to the timeout.
    assert take(queue, adapter, "uid-5", timeout=0.05) == []
    assert adapter.args == ("uid-5",)
    queue.offer(message(5))
    later = gevent.spawn_later(0.02, queue.offer, message(6))
    try:
        assert positions(take(queue, adapter, timeout=GUARD - 1)) == [6]
    finally:
        later.kill()
    queue.validate()
    # 1, 3 and 5 were the adapter's to refuse: they never come back.
    queue.offer(message(8))
    assert positions(take(queue, adapter)) == [8]


def test_beyond_max_pending_the_oldest_are_dropped_with_a_log_line(caplog):
    queue = AdapterQueue()
    queue.max_pending = 3
    with caplog.at_level(logging.WARNING, logger="oe_web_socketio.adapter"):
        for position in range(1, 6):
            queue.offer(message(position))
    assert queue.dropped == 2
    assert [record.getMessage() for record in caplog.records] == [
        "Adapter queue full: 1 message(s) dropped so far"
    ]
    assert positions(take(queue, Everything(None))) == [3, 4, 5]


def test_a_full_queue_logs_once_per_thousand_drops(caplog):
    queue = AdapterQueue()
    queue.max_pending = 1
    with caplog.at_level(logging.WARNING, logger="oe_web_socketio.adapter"):
        for position in range(1, 2002):
            queue.offer(message(position))
    assert queue.dropped == 2000
    assert [record.getMessage() for record in caplog.records] == [
        "Adapter queue full: 1 message(s) dropped so far",
        "Adapter queue full: 1000 message(s) dropped so far",
        "Adapter queue full: 2000 message(s) dropped so far",
    ]
    assert positions(take(queue, Everything(None))) == [2001]


@pytest.mark.parametrize("adapter_class", [Copies, Foreign])
def test_get_must_return_the_messages_it_was_given(adapter_class):
    queue = AdapterQueue()
    queue.offer(message(1))
    with pytest.raises(TypeError, match="messages it was given, unchanged"):
        take(queue, adapter_class(None))
    assert queue.offered == []


def test_the_default_adapter_takes_everything_and_sends_payloads():
    socket = object()
    adapter = Everything(socket)
    given = [message(1, {"a": 1}), message(2, ["b"])]
    assert adapter.socket is socket
    assert adapter.get(given, "ignored") == given
    assert adapter.format(given) == [{"a": 1}, ["b"]]
