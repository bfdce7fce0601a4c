"""Tests of :mod:`oe_web_socketio.exceptions`."""

from __future__ import annotations

import errno
import pickle

import pytest
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
