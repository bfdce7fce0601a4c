"""Tests of :mod:`oe_web_socketio.pubsub.local`: the in-process broker of
a host without a database, driven through a namespace and the long-poll
wait as a plain WSGI host's server drives it."""

from __future__ import annotations

import gevent
import pytest
from oe_web_socketio.auth import Identity
from oe_web_socketio.directory import SocketDirectory
from oe_web_socketio.exceptions import EventError, Resync
from oe_web_socketio.namespace import Namespace, Request
from oe_web_socketio.protocol import FORBIDDEN, MESSAGE_EVENT
from oe_web_socketio.pubsub import Address
from oe_web_socketio.pubsub.local import LocalBroker
from oe_web_socketio.rooms import channel_room

pytestmark = pytest.mark.timeout(20)


class Server:
    """What the broker and a namespace ask of python-socketio's server:
    rooms kept, emits recorded (per socket, as they would arrive)."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[str]] = {}
        self.received: dict[str, list[tuple]] = {}

    def enter_room(self, sid, room, namespace=None) -> None:
        self.rooms.setdefault(room, set()).add(sid)

    def leave_room(self, sid, room, namespace=None) -> None:
        self.rooms.get(room, set()).discard(sid)

    def emit(
        self, event, data, to=None, namespace=None, callback=None, ignore_queue=False
    ) -> None:
        # Durable messages are emitted to this process's sockets only.
        assert ignore_queue
        for sid in self.rooms.get(to, {to}):
            self.received.setdefault(sid, []).append((event, *data))


def directory() -> SocketDirectory:
    """A directory serving ``/``, whose sockets the tests never look up."""
    served = SocketDirectory()
    served.add("/", None)
    return served


def make(count: int = 100) -> tuple[Server, LocalBroker]:
    server = Server()
    broker = LocalBroker(
        server,
        directory(),
        "oe",
        history_max_count=count,
    )
    return server, broker


def socket(server: Server, broker: LocalBroker, sid: str) -> Namespace:
    namespace = Namespace(server, "/", sid, Request({}, "127.0.0.1"), broker=broker)
    namespace.authenticate(Identity(None, 7, "user7"))  # a WSGI host's: no db
    namespace.attach()
    return namespace


def messages(server: Server, sid: str) -> list[tuple]:
    return [m[1:] for m in server.received.get(sid, []) if m[0] == MESSAGE_EVENT]


def test_publish_reaches_subscribers_in_order_with_positions():
    server, broker = make()
    alice = socket(server, broker, "a")
    assert alice.database == "oe"  # the one database of the host
    alice.on_subscribe("news")
    for n in range(3):
        alice.publish({"n": n}, "news")
    broker.publish(Address("oe"), "to all")
    got = messages(server, "a")
    assert [m[:2] for m in got] == [
        ({"n": 0}, "news"),
        ({"n": 1}, "news"),
        ({"n": 2}, "news"),
        ("to all", None),
    ]
    assert [broker.locate("oe", m[2]) for m in got] == [1, 2, 3, 4]
    assert "a" in server.rooms[channel_room("oe", "news")]


def test_resume_replays_exactly_the_missed_ones_or_resyncs():
    server, broker = make()
    alice = socket(server, broker, "a")
    alice.on_subscribe("news")
    alice.publish("one", "news")
    seen = messages(server, "a")[-1][2]
    alice.publish("other", "sports")  # not its channel
    alice.publish("two", "news")
    alice.publish("three", "news")
    again = socket(server, broker, "b")  # the client, connected again
    answer = again.on_resume(seen, ["news"])
    assert answer == {"position": broker.token("oe", 4), "replayed": 2}
    alice.publish("four", "news")  # live, once
    assert [m[0] for m in messages(server, "b")] == ["two", "three", "four"]
    # Another process's (or a former start's) token, garbage: resync.
    for token in ("local-0000:1", "garbage", 7):
        answer = socket(server, broker, "c").on_resume(token, ["news"])
        assert answer["resync"] is True
        assert answer["position"] == broker.token("oe", 5)


def test_the_bounded_history_drops_the_oldest():
    server, broker = make(count=2)
    for n in range(4):
        broker.publish(Address("oe", channel="news"), n)
    assert [p for p, *_ in broker.history] == [3, 4]
    with pytest.raises(Resync):
        broker.replay("oe", 1, 4, namespace="/", channels=["news"])
    kept = broker.replay("oe", 2, 4, namespace="/", channels=["news"])
    assert [m.payload for m in kept] == [2, 3]
    answer = socket(server, broker, "a").on_resume(broker.token("oe", 1), ["news"])
    assert answer["reason"] == "past the retention window"


def test_a_channel_history_is_its_last_kept_lines_for_the_namespace():
    server, broker = make(count=6)
    alice = socket(server, broker, "a")
    for n in range(5):
        broker.publish(Address("oe", channel="news"), n)
    broker.publish(Address("oe", channel="sports"), "other channel")
    broker.publish(Address("oe", namespace="/elsewhere", channel="news"), "other ns")
    broker.publish(Address("oe", channel="news", sid="a"), "to a socket")
    with pytest.raises(EventError) as refused:
        alice.recent("news")
    assert refused.value.code == FORBIDDEN  # not subscribed
    alice.on_subscribe("news")
    recent = alice.recent("news", 3)
    # Oldest first.
    assert [(m.payload, m.position) for m in recent] == [(2, 3), (3, 4), (4, 5)]
    assert recent[0].token == broker.token("oe", 3)
    # The history keeps six (a message to a socket is not kept): 2 to 7.
    assert [m.payload for m in alice.recent("news")] == [1, 2, 3, 4]


def test_a_long_poll_gets_the_kept_ones_then_the_next_message():
    _, broker = make()
    broker.publish(Address("oe", channel="news"), "kept")
    since = broker.token("oe", 0)
    (kept,) = broker.wait_messages("oe", "news", since, 1.0)
    assert (kept.payload, kept.token) == ("kept", broker.token("oe", 1))
    waiting = gevent.spawn(broker.wait_messages, "oe", "news", kept.token, 5.0)
    gevent.sleep(0)
    broker.publish(Address("oe", channel="news"), "next")
    assert [m.payload for m in waiting.get(timeout=5)] == ["next"]
    with pytest.raises(TimeoutError):
        broker.wait_messages("oe", "news", None, 0.01)


def test_a_payload_that_is_not_json_is_refused_and_takes_no_position():
    server, broker = make()
    alice = socket(server, broker, "a")
    with pytest.raises(TypeError, match="must be JSON"):
        alice.publish({"when": {1, 2}})
    assert broker.head("oe") == 0
    message = {"n": [1]}
    alice.publish(message)
    message["n"].append(2)  # the published copy is not the caller's object
    ((payload, channel, token),) = messages(server, "a")
    assert (payload, channel, broker.locate("oe", token)) == ({"n": [1]}, None, 1)
    (replayed,) = broker.replay("oe", 0, 1, namespace="/", channels=())
    assert replayed.payload == {"n": [1]}
