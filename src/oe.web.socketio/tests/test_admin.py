"""Tests of :mod:`oe_web_socketio.admin`: who may watch, and when the
namespace is served. The Admin UI itself, through nginx and in Chromium
with Tryton's sessions, is tested in tests/test_monitoring.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from oe_web_socketio.admin import NAMESPACE, AdminView
from oe_web_socketio.app import Application
from oe_web_socketio.auth import Identity
from oe_web_socketio.config import Config
from oe_web_socketio.hosts import SessionHost
from sample_namespaces import FixedSessions, session

pytestmark = pytest.mark.timeout(10)


class Administered(SessionHost):
    """The tests' sessions, user 1 the one administrator."""

    def administers(self, identity: Identity) -> bool:
        return identity.uid == 1


def environ(**headers: str) -> dict[str, Any]:
    return {f"HTTP_{k.upper()}": v for k, v in headers.items()}


@pytest.fixture
def watched() -> Iterator[Application]:
    """An application with the Admin UI on. Its instrumentation patches
    python-engineio's socket class for the whole process: undone after."""
    app = Application(Config(admin_ui=True), Administered(FixedSessions()))
    yield app
    assert app.admin is not None
    app.admin.uninstrument()


def test_only_an_administrator_may_watch(watched):
    view = watched.admin
    assert isinstance(view, AdminView)
    assert view.admin_namespace == NAMESPACE
    assert view.read_only
    assert view.refusal({}, {"session": session(1)}, None) is None
    # The header is a session as well as the payload.
    authorization = environ(authorization=f"Session {session(1)}")
    assert view.refusal(authorization, None, None) is None
    assert view.refusal({}, {"session": session(2)}, None) == (
        "forbidden",
        "administrators only",
    )
    assert view.refusal({}, {"username": "admin", "password": "x"}, None) == (
        "authentication_failed",
        "authentication required",
    )
    assert view.refusal({}, {"session": session(1, key="f" * 64)}, None) == (
        "authentication_failed",
        "invalid session",
    )


def test_the_namespace_is_served_only_when_on(watched):
    assert NAMESPACE in watched.sio.handlers
    off = Application(Config(), Administered(FixedSessions()))
    assert off.admin is None
    assert NAMESPACE not in off.sio.handlers
    # Nobody to say who administers: not served either.
    assert Application(Config(admin_ui=True)).admin is None
