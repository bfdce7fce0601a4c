"""Tests of :mod:`oe_web_socketio.events`, the hook registry, in process.

That the server runs the hooks at the right moments is tested in
``test_namespace.py`` against a real server.
"""

from __future__ import annotations

import pytest
from oe_web_socketio import events
from oe_web_socketio.events import Event, Events, HookError

pytestmark = pytest.mark.timeout(10)


class FakeSocket:
    def __init__(self, *channels):
        self.channels = frozenset(channels)


def recorder(calls, name):
    def hook(request, socket, context, *args):
        calls.append((name, *args))

    return hook


def test_module_decorators_register_in_the_default_registry():
    assert events.on_message is events.default.on_message
    assert events.on_connect is events.default.on_connect
    assert isinstance(events.default, Events)


def test_decorator_bare_and_with_a_channel_returns_the_function():
    event = Event("on_message")

    def handler(request, socket, context, message):
        pass

    assert event(handler) is handler
    assert event(channel="^room-")(handler) is handler
    assert [pattern and pattern.pattern for _, pattern in event.handlers] == [
        None,
        "^room-",
    ]


def test_on_connect_takes_no_channel():
    registry = Events()
    with pytest.raises(HookError, match="on_connect hooks cannot be bound"):
        registry.on_connect(lambda *args: None, channel="x")


def test_an_invalid_pattern_is_refused_at_registration():
    with pytest.raises(HookError, match=r"invalid channel pattern '\('"):
        Event("on_message")(lambda *args: None, channel="(")


def test_unbound_hooks_always_run_bound_ones_when_a_channel_matches():
    calls = []
    event = Event("on_message")
    event(recorder(calls, "any"))
    event(recorder(calls, "room"), channel="^room-")
    event(recorder(calls, "desk"), channel="desk")
    event.send("request", FakeSocket(), {}, "m0")
    event.send("request", FakeSocket("room-1", "desk-1"), {}, "m1")
    event.send("request", FakeSocket("my-room-1"), {}, "m2")  # re.match
    event.send("request", FakeSocket("room-1"), {}, "m3", channels=["desk-2"])
    assert calls == [
        ("any", "m0"),
        ("any", "m1"),
        ("room", "m1"),
        ("desk", "m1"),
        ("any", "m2"),
        ("any", "m3"),
        ("desk", "m3"),
    ]


def test_hooks_receive_request_socket_and_context():
    seen = []
    event = Event("on_subscribe")
    event(lambda *args: seen.append(args))
    socket, context = FakeSocket("a"), {"k": 1}
    event.send("req", socket, context, "a")
    assert seen == [("req", socket, context, "a")]


def test_an_exception_stops_the_hooks_of_that_event():
    calls = []
    event = Event("on_message")

    def failing(*args):
        raise RuntimeError("x")

    event(failing)
    event(recorder(calls, "after"))
    with pytest.raises(RuntimeError):
        event.send(None, FakeSocket(), {}, "m")
    assert calls == []


def test_registries_are_independent():
    first, second = Events(), Events()
    first.on_finish(lambda *args: None)
    assert len(first.on_finish.handlers) == 1
    assert second.on_finish.handlers == []
    assert "on_finish=1" in repr(first)
