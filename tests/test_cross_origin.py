"""Cross-site WebSocket hijacking: a page of another origin cannot use the
user's ``tryton_session`` cookie, in headless Chromium.

trytond 8 sets the cookie ``Secure; HttpOnly; SameSite=Strict; Path=/<db>``.
SameSite does not stop a page of the *same site* and another origin (another
port of the host, a sibling subdomain): Chromium sends the cookie with its
requests, WebSocket handshakes included. So the attacker pages here are on
127.0.0.1 too, on ports of their own: one *partner* origin that the
server's ``cors_allowed_origins`` lists (it may use the server with a
session it presents itself, never with the cookie), and one *stranger*
origin that it does not list.

The user logs in as sao does (``POST /<db>/session/login`` on trytond,
which sets the real cookie). Cookies do not depend on the port, so the
browser sends it to the real-time server under test on the same host. A
copy with ``Path=/`` stands for a site whose proxy widens the cookie's path
(nginx ``proxy_cookie_path``) or that mounts Socket.IO under ``/<db>/``:
only then does a browser send it to ``/socket.io/`` and ``/longpolling/``.

Every attempt is checked in the page (``connect_error``, a refused or
opaque answer) and at the server (its access log, the refusals it logs,
and a chat room that no refused socket ever joins), with a positive
control: the same requests from the server's own origin work as the user.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .appliance import ROOT
from .browser import console_recorder
from .realtime import RealtimeServer, Recorder
from .tryton import Session, Trytond, new_password

pytestmark = pytest.mark.timeout(240)

#: The official client, as any page would load it.
SOCKET_IO_CLIENT = (
    ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
)

#: The chat room every socket of these tests joins once connected.
ROOM = "room-cross-origin"

#: Milliseconds a page waits for a connection or a refusal.
WAIT_MS = 20_000

#: Opens a Socket.IO connection to the chat and reports how it went: the
#: login the server shows in the room for a connected socket, or the
#: connect_error. withCredentials: a page that wants the cookie sent.
CONNECT = """
([url, transport, auth, room]) => new Promise((resolve) => {
  const socket = io(url + "/chat", {
    transports: [transport], withCredentials: true, reconnection: false,
    timeout: 15000, auth: auth ?? undefined,
  });
  const done = (result) => { socket.close(); resolve(result); };
  socket.on("connect", () => socket.emit("subscribe", room));
  socket.on("message", (line) => {
    if (line.type === "join") done({connected: true, login: line.login});
  });
  socket.on("connect_error", (error) =>
    done({connected: false, message: error.message, data: error.data ?? null}));
})
"""

#: A fetch with the user's cookies: its status, or how the browser failed
#: it (an opaque answer, status 0, is what a no-cors page gets).
FETCH = """
async ([url, init]) => {
  try {
    const response = await fetch(url, {credentials: "include", ...init});
    return {status: response.status, body: response.type === "opaque" ? null
      : await response.text()};
  } catch (error) {
    return {error: String(error)};
  }
}
"""


#: A POST no page reads the answer of, cookies included.
BEACON = """
([url, body]) => navigator.sendBeacon(url, new Blob([body], {type: "text/plain"}))
"""


class OtherOrigin:
    """A page server of its own origin, ``http://127.0.0.1:<port>``, in a
    thread of the test process: an empty HTML page at every path."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<!doctype html><title>another origin</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def origins() -> Iterator[dict[str, OtherOrigin]]:
    partner, stranger = OtherOrigin(), OtherOrigin()
    yield {"partner": partner, "stranger": stranger}
    partner.close()
    stranger.close()


@pytest.fixture(scope="module")
def realtime(appliance, trytond, origins, tmp_path_factory) -> Iterator[RealtimeServer]:
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        tmp_path_factory.mktemp("cross_origin") / "oe_web_socketio.log",
        settings={
            "cors_allowed_origins": origins["partner"].url,
            # A poll with nothing to read answers at once, more or less.
            "bus_long_polling_timeout": 1,
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def password(trytond: Trytond) -> tuple[str, str]:
    login, password = "cross_origin_user", new_password()
    trytond.create_user(login, password)
    return login, password


class Log:
    """The lines the server logs from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def wait(self, pattern: str, timeout: float = 10) -> list[str]:
        """The new lines up to and including the first that matches
        *pattern*, waited for; the next call reads after them."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            with self.path.open("rb") as file:
                file.seek(self.offset)
                text = file.read().decode("utf-8", "replace")
            lines = text.splitlines(keepends=True)
            for index, line in enumerate(lines):
                if line.endswith("\n") and regex.search(line):
                    taken = lines[: index + 1]
                    self.offset += sum(len(item.encode()) for item in taken)
                    return taken
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} in {text!r}")
            time.sleep(0.05)


def test_another_origin_cannot_use_the_session_cookie(
    browser_context, realtime, trytond, origins, password
):
    login, secret = password
    database = trytond.database
    page = browser_context.new_page()
    console = console_recorder(page)

    # The user logs in as sao does: trytond sets the cookie.
    page.goto(f"{trytond.url}/{database}/")
    answer = page.evaluate(
        FETCH,
        [
            f"/{database}/session/login",
            {
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(
                    {
                        "method": "common.db.login",
                        "params": [login, {"password": secret}, "en"],
                    }
                ),
            },
        ],
    )
    assert answer["status"] == 200, answer
    (cookie,) = [c for c in browser_context.cookies() if c["name"] == "tryton_session"]
    assert (cookie["path"], cookie["sameSite"]) == (f"/{database}", "Strict")
    user, uid, key = cookie["value"].rsplit(":", 2)
    session = Session(login=user, uid=int(uid), key=key)
    # The same cookie where a browser sends it to /socket.io/ too.
    browser_context.add_cookies([{**cookie, "path": "/"}])

    # A witness in the room: every socket that connects joins it.
    witness = Recorder(
        realtime.url, "/chat", "websocket", auth={"session": trytond.admin.header}
    )
    try:
        assert witness.call("subscribe", ROOM) is True
        log = Log(realtime.log)

        def attempt(origin: str, transport: str, auth=None) -> dict:
            page.goto(f"{origin}/health" if origin == realtime.url else origin)
            page.add_script_tag(path=str(SOCKET_IO_CLIENT))
            return page.evaluate(CONNECT, [realtime.url, transport, auth, ROOM])

        partner, stranger = origins["partner"].url, origins["stranger"].url
        for transport in ("websocket", "polling"):
            # Positive control: the server's own origin, the cookie alone.
            result = attempt(realtime.url, transport)
            assert result == {"connected": True, "login": login}, (result, console)

            # The partner origin may connect with a session it presents...
            result = attempt(partner, transport, {"session": session.header})
            assert result == {"connected": True, "login": login}, (result, console)

            # ... never with the cookie: refused with a reason, one log line.
            result = attempt(partner, transport)
            assert result["connected"] is False, (transport, result)
            assert result["data"] == {"code": "authentication_failed"}, result
            assert "another origin" in result["message"], result
            (refusal,) = [
                line
                for line in log.wait(r"Refused connection to /chat from")
                if "Refused" in line
            ]
            assert "another origin" in refusal

            # A stranger origin is refused by python-engineio before anything.
            result = attempt(stranger, transport)
            assert result["connected"] is False, (transport, result)
            assert result["message"] in ("websocket error", "xhr poll error"), result

        # The room saw the four allowed connections, no other.
        joins = [
            line["login"]
            for line, *_ in witness.messages()
            if line["type"] == "join" and line["login"] != "admin"
        ]
        assert joins == [login] * 4, joins
        assert realtime.health()["clients"] == 1  # the witness

        # Long-polling routes: no-cors GETs carry no Origin, only
        # Sec-Fetch-Site; the handler must not run as the user.
        whoami = f"{realtime.url}/longpolling/example/whoami"
        page.goto(f"{realtime.url}/health")
        result = page.evaluate(FETCH, [whoami, {}])
        assert result["status"] == 200 and json.loads(result["body"])["login"] == login
        log.wait(r'"GET /longpolling/example/whoami HTTP/1.1" 200 ')
        for origin in (partner, stranger):
            page.goto(origin)
            result = page.evaluate(FETCH, [whoami, {"mode": "no-cors"}])
            assert result == {"status": 0, "body": None}, result
            log.wait(r'"GET /longpolling/example/whoami HTTP/1.1" 401 ')

        # Tryton's bus (the cookie of path /<db> reaches it without help).
        bus = f"{realtime.url}/{database}/bus"
        poll = {
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(
                {"channels": [f"notification:{uid}"], "last_message": None}
            ),
        }
        page.goto(f"{realtime.url}/health")
        result = page.evaluate(FETCH, [bus, poll])
        assert result["status"] == 200, result
        assert json.loads(result["body"]) == {"message": None, "channel": None}
        log.wait(rf'"POST /{database}/bus HTTP/1.1" 200 ')
        for origin, status in ((partner, 401), (stranger, 403)):
            page.goto(origin)
            # Readable only after a preflight, which the bus does not grant.
            result = page.evaluate(FETCH, [bus, poll])
            assert "error" in result, result
            # A simple request goes out with the cookie, and is refused. A
            # beacon: a fetch would wait on the browser's Basic login
            # prompt that trytond's 401 asks for (WWW-Authenticate).
            assert page.evaluate(BEACON, [bus, poll["body"]]) is True
            log.wait(rf'"POST /{database}/bus HTTP/1.1" {status} ')
    finally:
        witness.disconnect()
        trytond.logout(session)
