"""The plain WSGI chat: an application of a few lines, served with
oe_web_socketio's real-time endpoints in front of it.

``GET /`` is the chat page; ``POST /announce`` (JSON or a form: ``room``,
``text``) is an ordinary view that broadcasts to the room's subscribers,
live, with :func:`oe_web_socketio.wsgi.broadcast_channel`. Run it with
``bin/oe_web_socketio_wsgi_chat --port 8081`` (then open
http://127.0.0.1:8081/).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from oe_web_socketio.hosts.wsgi import Authenticate
from oe_web_socketio.wsgi import broadcast_channel, script_tags, serve

from oe_web_socketio_wsgi_chat import chat, page

#: Largest body /announce reads, in bytes.
MAX_BODY = 10_000


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """The WSGI application: the page and the announce view."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
    if path == "/" and method in ("GET", "HEAD"):
        body = page.render("Plain WSGI chat", script_tags()).encode()
        return _answer(start_response, "200 OK", body, "text/html; charset=utf-8")
    if path == "/announce" and method == "POST":
        return announce(environ, start_response)
    return _json(start_response, "404 Not Found", {"error": "not found"})


def announce(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """``POST /announce``: broadcast ``text`` to the room ``room``."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_BODY:
        return _json(start_response, "400 Bad Request", {"error": "bad body length"})
    body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
    if str(environ.get("CONTENT_TYPE", "")).startswith("application/json"):
        try:
            fields = json.loads(body)
        except ValueError:
            fields = None
    else:
        fields = dict(urllib.parse.parse_qsl(body))
    try:
        line = chat.announcement(fields)
    except ValueError as exc:
        return _json(start_response, "400 Bad Request", {"error": str(exc)})
    broadcast_channel(line, line["room"], namespace="/chat")
    return _json(start_response, "200 OK", {"sent": line})


def _json(
    start_response: Callable[..., Any], status: str, value: Any
) -> Iterable[bytes]:
    body = json.dumps(value).encode()
    return _answer(start_response, status, body, "application/json")


def _answer(
    start_response: Callable[..., Any], status: str, body: bytes, content_type: str
) -> Iterable[bytes]:
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    return [body]


def main(
    argv: Sequence[str] | None = None, authenticate: Authenticate = chat.authenticate
) -> None:
    """Serve the chat until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="The plain WSGI chat example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    serve(
        application,
        namespaces={"/chat": chat.Chat},
        authenticate=authenticate,
        host=args.host,
        port=args.port,
    )
