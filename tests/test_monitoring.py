"""Watching a worker: its Prometheus metrics after known deliveries.

One stack serves every test of the module: a real-time server of the test
database, and a private nginx of the shipped template (:mod:`tests.nginx`)
before it and trytond. The metrics are scraped from the worker's own
port, as Prometheus does; nginx must not serve them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from oe_web_socketio import outbox
from prometheus_client.parser import text_string_to_metric_families

from .nginx import private_nginx
from .realtime import RealtimeServer, Recorder
from .tryton import Trytond

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
