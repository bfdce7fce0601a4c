"""The Flask chat: the extension :class:`~oe_web_socketio.contrib.flask.SocketIO`,
``{{ socketio_scripts() }}`` in the template, ``SOCKETIO_*`` config keys.

``GET /`` is the chat page; ``POST /announce`` (JSON or a form: ``room``,
``text``) is an ordinary view that broadcasts to the room's subscribers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from flask import Flask, render_template_string, request
from oe_web_socketio.contrib.flask import SocketIO
from oe_web_socketio.hosts.wsgi import Authenticate
from oe_web_socketio_wsgi_chat import chat, page

#: The page: Jinja, the client included by the extension's template global.
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title>
{{ socketio_scripts() }}
</head>
<body>
<h1>{{ title }}</h1>
{{ body|safe }}
<script>{{ script|safe }}</script>
</body>
</html>
"""


def create_app(
    authenticate: Authenticate | None = None, **config: Any
) -> tuple[Flask, SocketIO]:
    """The application and its extension; *config* goes to ``app.config``
    (``SOCKETIO_HOST``, ``SOCKETIO_PORT``, ``SOCKETIO_CONFIG``)."""
    app = Flask(__name__)
    app.config.from_mapping(config)
    socketio = SocketIO(
        namespaces={"/chat": chat.Chat},
        authenticate=authenticate or chat.authenticate,
    )

    @app.get("/")
    def index() -> str:
        return render_template_string(
            TEMPLATE, title="Flask chat", body=page.BODY, script=page.SCRIPT
        )

    @app.post("/announce")
    def announce() -> Any:
        fields = request.get_json(silent=True) if request.is_json else request.form
        try:
            line = chat.announcement(fields)
        except ValueError as exc:
            return {"error": str(exc)}, 400
        socketio.broadcast_channel(line, line["room"], namespace="/chat")
        return {"sent": line}

    socketio.init_app(app)
    return app, socketio


def main(
    argv: Sequence[str] | None = None, authenticate: Authenticate | None = None
) -> None:
    """Serve the chat until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="The Flask chat example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    args = parser.parse_args(argv)
    app, socketio = create_app(
        authenticate, SOCKETIO_HOST=args.host, SOCKETIO_PORT=args.port
    )
    socketio.run(app)
