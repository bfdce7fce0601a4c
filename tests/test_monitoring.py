"""Watching a worker: its Prometheus metrics after known deliveries, and
the Socket.IO Admin UI through nginx, for Tryton's administrators only.

One stack serves every test of the module: a real-time server of the test
database with ``admin_ui`` on, and a private nginx of the shipped template
(:mod:`tests.nginx`) before it and trytond. The metrics are scraped from
the worker's own port, as Prometheus does; nginx must not serve them. The
Admin UI is the npm package's built files served by that nginx, in
headless Chromium, with the administrator's ``tryton_session`` cookie
(path ``/<db>``), which the browser sends to ``/<db>/socket.io/``.
"""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import socketio
from oe_web_socketio import outbox
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from prometheus_client.parser import text_string_to_metric_families

from .browser import console_recorder, screenshot
from .nginx import private_nginx
from .realtime import RealtimeServer, Recorder
from .tryton import Session, Trytond, new_password

pytestmark = pytest.mark.timeout(120)

#: Seconds a test waits for what should come at once.
DEADLINE = 15.0


@dataclass
class Stack:
    server: RealtimeServer
    #: nginx's URL.
    url: str
    database: str


@pytest.fixture(scope="module")
def stack(appliance, trytond: Trytond, tmp_path_factory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("monitoring")
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        directory / "oe_web_socketio.log",
        settings={"admin_ui": "true"},
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while any(
            state["state"] != "listening"
            for state in server.health()["listeners"].values()
        ):
            assert time.monotonic() < deadline, server.health()
            time.sleep(0.05)
        values = {
            "ports:trytond": trytond.url.rpartition(":")[2],
            "ports:socketio": str(server.port),
            "settings:database": trytond.database,
        }
        with private_nginx(directory / "nginx", values) as url:
            yield Stack(server, url, trytond.database)
    finally:
        server.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of ``/metrics``, by name and labels."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_bridge_delivery_and_nginx_does_not_serve_them(
    stack, trytond, tryton_db
):
    channel = f"metrics-{time.monotonic_ns()}"
    database = stack.database
    before = scrape(stack.server.url)
    recorder = Recorder(
        stack.server.url, "/", "websocket", auth={"session": trytond.admin.header}
    )
    try:
        recorder.call("resume", None, [channel])
        with tryton_db.connect() as conn, conn.transaction():
            outbox.publish(conn.cursor(), {"n": 1}, channel)
        recorder.wait_message(lambda *args: len(args) == 3 and args[1] == channel)
        after = scrape(stack.server.url)
    finally:
        recorder.disconnect()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("oe_socketio_messages_delivered_total", database=database) == 1
    assert delta("oe_socketio_delivery_lag_seconds_count", database=database) == 1
    assert value(after, "oe_socketio_listener_up", database=database) == 1
    assert (
        value(after, "oe_socketio_connections", namespace="/", transport="websocket")
        >= 1
    )
    assert delta("oe_socketio_events_received_total", namespace="/") == 1
    # The session was checked on a cursor of the pool, now back.
    assert (("oe_socketio_pool_in_use", (("database", database),))) in after
    assert value(after, "oe_socketio_pool_waiting", database=database) == 0
    assert value(after, "oe_socketio_broker_info", broker="OutboxBroker") == 1

    public = requests.get(f"{stack.url}/metrics", timeout=10)
    assert "oe_socketio_" not in public.text


def admin_socket(stack: Stack, session: Session | None) -> Any:
    """Connect a python-socketio client to the Admin UI's namespace through
    nginx, as the UI does, with *session*'s cookie; return the sockets the
    server lists to it (``all_sockets``) or the ``connect_error`` data."""
    client = socketio.Client(reconnection=False)
    refused: list[Any] = []
    listed: queue.Queue[Any] = queue.Queue()
    client.on(
        "connect_error", lambda data=None: refused.append(data), namespace="/admin"
    )
    client.on("all_sockets", listed.put, namespace="/admin")
    headers = {}
    if session is not None:
        cookie = f"{session.login}:{session.uid}:{session.key}"
        headers["Cookie"] = f"tryton_session={cookie}"
    try:
        client.connect(
            stack.url,
            namespaces=["/admin"],
            socketio_path=f"/{stack.database}/socket.io",
            transports=["websocket"],
            headers=headers,
            wait_timeout=10,
        )
        return listed.get(timeout=DEADLINE)
    except socketio.exceptions.ConnectionError:
        return refused[0] if refused else "refused"
    finally:
        client.disconnect()
        client.shutdown()


def test_the_admin_namespace_is_for_administrators_only(stack, trytond):
    password = new_password()
    trytond.create_user("mon_plain", password)
    plain = trytond.login("mon_plain", password)
    listed = admin_socket(stack, trytond.admin)
    # The administrator's own socket, its session hidden.
    (own,) = [socket for socket in listed if socket["nsp"] == "/admin"]
    assert own["handshake"]["headers"]["cookie"] == "(hidden)"
    assert admin_socket(stack, plain) == {
        "message": "administrators only",
        "data": {"code": "forbidden"},
    }
    assert admin_socket(stack, None) == {
        "message": "authentication required",
        "data": {"code": "authentication_failed"},
    }


def test_the_admin_ui_shows_an_administrator_the_sockets(
    stack, trytond, browser_context
):
    watched = Recorder(
        stack.server.url, "/", "websocket", auth={"session": trytond.admin.header}
    )
    try:
        sid = watched.client.get_sid("/")
        admin = trytond.admin
        browser_context.add_cookies(
            [
                {
                    "name": "tryton_session",
                    "value": f"{admin.login}:{admin.uid}:{admin.key}",
                    "domain": "127.0.0.1",
                    "path": f"/{stack.database}",
                }
            ]
        )
        page = browser_context.new_page()
        console = console_recorder(page)
        # The UI's page loads fonts and icons from CDNs nobody reaches here.
        page.route(
            re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort()
        )
        settings = {
            "server_url": stack.url,
            "namespace": "/admin",
            "path": f"/{stack.database}/socket.io",
            "ws_only": "false",
        }
        page.add_init_script(
            "".join(
                f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
                for k, v in settings.items()
            )
        )
        page.goto(f"{stack.url}/socket.io-admin/#/sockets/")
        try:
            page.get_by_text(sid).first.wait_for(timeout=DEADLINE * 1000)
        except PlaywrightTimeoutError:
            picture = screenshot(page, "admin-ui")
            raise AssertionError(
                f"{sid} not shown (see {picture}): {console}"
            ) from None
    finally:
        watched.disconnect()
