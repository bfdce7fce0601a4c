"""The ``GET /oe_web_socketio/<name>`` route: the files of the package's
``static/`` folder, above all the browser client ``oe_web_socketio.js``.

The bundle is built from the repository's ``js/`` by ``make build``
(esbuild) into ``static/`` and is not committed; serving it from the
server itself gives every host (the appliance behind nginx, a plain WSGI
application) the client at the same path.

Invariants:

* only a regular file directly in the folder is served, named by one path
  segment of letters, digits, ``_``, ``-`` and ``.`` not starting with a
  dot: no traversal, no hidden file, no directory listing; anything else
  is ``404``;
* every answer carries ``ETag`` and ``Last-Modified`` (from the file's
  modification time and size) and ``Cache-Control: no-cache``, so a
  browser revalidates and a rebuilt bundle is picked up at once; a
  matching ``If-None-Match`` gets ``304`` without a body;
* a request for the bundle before it was built is ``404`` and one log
  line telling to run ``make build``.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import re
from http import HTTPStatus
from pathlib import Path

from oe_web_socketio.routing import Request, Response, Route

logger = logging.getLogger(__name__)

#: The prefix of the route; nginx sends it to this server too.
PREFIX = "/oe_web_socketio"

#: The folder served, inside the package.
STATIC = Path(__file__).resolve().parent / "static"

#: The browser client's file name, built by ``make build``.
BUNDLE = "oe_web_socketio.js"

#: The names that may be served.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")

#: Content types that must not depend on the machine's mime.types.
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


class StaticFiles:
    """Endpoint serving the files of *directory*.

    Keeps the last read content of each file, read again when its
    modification time or size changes.
    """

    def __init__(self, directory: Path = STATIC) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[tuple[int, int], bytes]] = {}

    def route(self) -> Route:
        return Route(f"{PREFIX}/<name>", self)

    def __call__(self, request: Request) -> Response:
        name = str(request.path_args.get("name", ""))
        path = self.directory / name
        if not NAME.fullmatch(name) or not path.is_file():
            if name == BUNDLE:
                logger.warning(
                    "%s %s/%s: the JavaScript client is not built; run `make build`",
                    request.client,
                    PREFIX,
                    BUNDLE,
                )
            return Response.json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        etag = f'"{stamp[0]:x}-{stamp[1]:x}"'
        headers = (
            ("ETag", etag),
            ("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True)),
            ("Cache-Control", "no-cache"),
        )
        content_type = CONTENT_TYPES.get(path.suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        if etag in _etags(request.environ.get("HTTP_IF_NONE_MATCH", "")):
            return Response(HTTPStatus.NOT_MODIFIED, b"", headers, content_type)
        cached = self._cache.get(name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, path.read_bytes())
            self._cache[name] = cached
        return Response(HTTPStatus.OK, cached[1], headers, content_type)


def _etags(header: str) -> set[str]:
    """The entity tags of an ``If-None-Match`` header (weak ones as strong)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def static_route(directory: Path = STATIC) -> Route:
    """The route serving *directory* at ``/oe_web_socketio/<name>``."""
    return StaticFiles(directory).route()
