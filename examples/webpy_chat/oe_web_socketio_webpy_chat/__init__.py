"""The chat with rooms in a web.py application (see :mod:`.app`).

:func:`main` patches the standard library for gevent before it imports
the application, hence web.py: web.py keeps its request context in a
``threading.local`` that must be greenlet-local.
"""

from __future__ import annotations

from collections.abc import Sequence

from oe_web_socketio.hosts.wsgi import Authenticate


def main(
    argv: Sequence[str] | None = None, authenticate: Authenticate | None = None
) -> None:
    """Serve the chat until SIGTERM or SIGINT."""
    from oe_web_socketio.patch import patch

    patch()
    from oe_web_socketio_webpy_chat import app

    app.main(argv, authenticate)
