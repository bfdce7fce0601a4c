"""Tests of :mod:`oe_web_socketio.exceptions`."""

from __future__ import annotations

import errno
import importlib
import pickle
import pkgutil

import pytest
from oe_web_socketio import exceptions
from oe_web_socketio.exceptions import ConfigError, ListenError, OeWebSocketIOError

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("cls", [ConfigError, ListenError])
def test_one_root(cls):
    assert issubclass(cls, OeWebSocketIOError)


def test_config_error_message_names_source_and_key():
    error = ConfigError("must be at least 1, got 0", key="max_cursor")
    assert str(error) == "max_cursor: must be at least 1, got 0"
    located = error.with_source("/etc/oe.cfg")
    assert str(located) == "/etc/oe.cfg: max_cursor: must be at least 1, got 0"
    assert (located.problem, located.key) == (error.problem, error.key)
    assert str(ConfigError("no section", source="a.cfg")) == "a.cfg: no section"


def test_listen_error_message():
    error = ListenError("127.0.0.1", 8068, errno.EADDRINUSE, "Address in use")
    assert str(error) == "cannot listen on port 8068 on 127.0.0.1: Address in use"


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("bad", key="port", source="x.cfg"),
        ListenError("::1", 1, errno.EACCES, "Permission denied"),
    ],
)
def test_errors_survive_pickling(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)


# --- one module, one root, three families


def _package_modules():
    import oe_web_socketio

    for info in pkgutil.walk_packages(
        oe_web_socketio.__path__, prefix="oe_web_socketio."
    ):
        if info.name == "oe_web_socketio.__main__":
            continue  # it runs the server
        yield importlib.import_module(info.name)


def test_every_exception_of_the_package_is_defined_in_exceptions():
    defined_elsewhere = sorted(
        f"{module.__name__}.{name}"
        for module in _package_modules()
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and module is not exceptions
    )
    assert defined_elsewhere == []


def test_every_exception_derives_from_the_root():
    classes = [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(classes) > 20
    assert all(issubclass(cls, OeWebSocketIOError) for cls in classes)


@pytest.mark.parametrize(
    "cls",
    [
        exceptions.ConfigError,
        exceptions.ListenError,
        exceptions.UsageError,
        exceptions.NamespaceError,
        exceptions.DuplicateNamespaceError,
        exceptions.RouteError,
        exceptions.DuplicateRouteError,
        exceptions.HookError,
    ],
)
def test_faults_of_the_set_up_are_user_errors(cls):
    assert issubclass(cls, exceptions.UserError)
    assert not issubclass(cls, exceptions.ClientError)


@pytest.mark.parametrize(
    "cls",
    [
        exceptions.AuthenticationError,
        exceptions.EventError,
        exceptions.MalformedPacketError,
        exceptions.EngineIOPacketError,
        exceptions.PayloadError,
        exceptions.HTTPError,
    ],
)
def test_refusals_of_what_a_client_sent_are_client_errors(cls):
    assert issubclass(cls, exceptions.ClientError)
    assert not issubclass(cls, exceptions.UserError)


@pytest.mark.parametrize(
    "cls",
    [
        exceptions.DatabaseUnavailable,
        exceptions.PoolTimeout,
        exceptions.HostError,
        exceptions.GateTimeout,
        exceptions.QueueFull,
        exceptions.PollTimeout,
    ],
)
def test_faults_of_the_running_server_are_neither(cls):
    assert not issubclass(cls, exceptions.UserError | exceptions.ClientError)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("oe_web_socketio", "EventError"),
        ("oe_web_socketio.cli", "UsageError"),
        ("oe_web_socketio.protocol", "EventError"),
        ("oe_web_socketio.protocol", "MalformedPacketError"),
        ("oe_web_socketio.protocol", "EngineIOPacketError"),
        ("oe_web_socketio.protocol", "PayloadError"),
        ("oe_web_socketio.routing", "HTTPError"),
        ("oe_web_socketio.routing", "DuplicateRouteError"),
        ("oe_web_socketio.sockets", "NamespaceError"),
        ("oe_web_socketio.sockets", "DuplicateNamespaceError"),
        ("oe_web_socketio.longpolling", "RouteError"),
        ("oe_web_socketio.longpolling", "PollTimeout"),
        ("oe_web_socketio.limits", "QueueFull"),
        ("oe_web_socketio.events", "HookError"),
        ("oe_web_socketio.hosts", "HostError"),
        ("oe_web_socketio.hosts.tryton_orm", "GateTimeout"),
    ],
)
def test_the_former_homes_still_export_their_exceptions(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(exceptions, name)


def test_close_codes_are_those_of_the_protocol():
    from oe_web_socketio import protocol

    assert (
        exceptions.MalformedPacketError("x").close_code
        == protocol.CLOSE_POLICY_VIOLATION
    )
    assert exceptions.EngineIOPacketError("x").close_code == (
        protocol.CLOSE_PROTOCOL_ERROR
    )
