"""The web.py chat: ``socketio_urls`` in the urls, the client's script in
the template, ``SOCKETIO_HOST``/``SOCKETIO_PORT`` in ``web.config``.

``GET /`` is the chat page; ``POST /announce`` (JSON or a form: ``room``,
``text``) is an ordinary view that broadcasts to the room's subscribers.
Import this module only after :func:`oe_web_socketio.patch.patch` (see
the package's :func:`~oe_web_socketio_webpy_chat.main`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import web
from oe_web_socketio.contrib import webpy as socketio_webpy
from oe_web_socketio.hosts.wsgi import Authenticate
from oe_web_socketio_wsgi_chat import chat, page

# No autoreloader nor debug pages: this is served, not developed.
web.config.debug = False

urls = ("/", "Index", "/announce", "Announce", *socketio_webpy.socketio_urls)

#: The page: web.py's template syntax, the client included by its global.
TEMPLATE = """$def with (title, body, script)
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>$title</title>
$:socketio_scripts()
</head>
<body>
<h1>$title</h1>
$:body
<script>$:script</script>
</body>
</html>
"""

render = web.template.Template(
    TEMPLATE, globals={"socketio_scripts": socketio_webpy.socketio_scripts}
)


class Index:
    def GET(self):
        web.header("Content-Type", "text/html; charset=utf-8")
        return render("web.py chat", page.BODY, page.SCRIPT)


class Announce:
    def POST(self):
        if web.ctx.env.get("CONTENT_TYPE", "").startswith("application/json"):
            try:
                fields = json.loads(web.data() or b"null")
            except ValueError:
                fields = None
        else:
            fields = dict(web.input())
        web.header("Content-Type", "application/json")
        try:
            line = chat.announcement(fields)
        except ValueError as exc:
            raise web.badrequest(json.dumps({"error": str(exc)})) from None
        socketio_webpy.broadcast_channel(line, line["room"], namespace="/chat")
        return json.dumps({"sent": line})


app = web.application(urls, globals())


def main(
    argv: Sequence[str] | None = None, authenticate: Authenticate | None = None
) -> None:
    """Serve the chat until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="The web.py chat example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args(argv)
    web.config.SOCKETIO_HOST = args.host
    web.config.SOCKETIO_PORT = args.port
    socketio_webpy.run(
        app,
        namespaces={"/chat": chat.Chat},
        authenticate=authenticate or chat.authenticate,
    )
