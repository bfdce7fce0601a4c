"""Calling a WSGI application in process, for the tests of this package."""

from __future__ import annotations

from typing import Any


def call_wsgi(
    app: Any,
    method: str,
    path: str,
    query: str = "",
    remote_addr: str = "127.0.0.1",
) -> tuple[str, dict[str, str], bytes]:
    """Call the WSGI *app*; return the status line, headers and body."""
    answer: dict[str, Any] = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = status
        answer["headers"] = dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": remote_addr,
    }
    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body
