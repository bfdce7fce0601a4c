"""Real-time Socket.IO server on gevent beside the Tryton ERP.

Importing this package has no side effect: it neither patches gevent nor
reads any file or environment variable, and it imports neither gevent nor
Socket.IO, which must come after the patch (see :mod:`oe_web_socketio.patch`).
The names below are imported on first use::

    from oe_web_socketio import EventError, Namespace, SocketIO, events

The entry point is :func:`oe_web_socketio.cli.main`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["EventError", "Namespace", "SocketIO", "events"]

#: Where each lazily imported name lives.
_LAZY = {
    "EventError": "oe_web_socketio.exceptions",
    "Namespace": "oe_web_socketio.namespace",
    "SocketIO": "oe_web_socketio.sockets",
}

if TYPE_CHECKING:
    from oe_web_socketio import events
    from oe_web_socketio.exceptions import EventError
    from oe_web_socketio.namespace import Namespace
    from oe_web_socketio.sockets import SocketIO


def __getattr__(name: str) -> Any:
    if name == "events":
        return importlib.import_module("oe_web_socketio.events")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
