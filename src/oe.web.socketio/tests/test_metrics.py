"""Tests of :mod:`oe_web_socketio.metrics`: ``GET /metrics`` of a real
server process, scraped before and after clients did known things, and
the translation of ``/health``'s counters."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from oe_web_socketio.metrics import _translate
from prometheus_client.parser import text_string_to_metric_families
from socketio_testing import NAMESPACE_OPTIONS, Clients, serve_tests_dir

pytestmark = pytest.mark.timeout(60)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of ``/metrics``, by name and labels."""
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def server(module_spawn_server):
    with pytest.MonkeyPatch.context() as monkeypatch:
        serve_tests_dir(monkeypatch)
        return module_spawn_server(*NAMESPACE_OPTIONS)


def test_metrics_count_what_clients_did(server):
    before = scrape(server.url)
    clients = Clients(server.url, "websocket")
    try:
        ws = clients.connect("/public")
        polling = clients.connect("/public", transport="polling")
        for _ in range(3):
            assert ws.call("echo", 1) == 1
        polling.call("echo", 2)
        # Refused: an event nobody handles, a path nobody serves.
        assert ws.call("nosuchevent")["error"]["code"] == "unknown_event"
        assert clients.new("/nowhere").refused()["data"]["code"] == "unknown_namespace"
        assert clients.new("/refusing").refused()["data"]["code"] == "closed"
        ws.call("send_and_broadcast", "hi")
        after = scrape(server.url)
    finally:
        clients.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "oe_socketio_clients") == 2
    assert (
        value(
            after, "oe_socketio_connections", namespace="/public", transport="websocket"
        )
        == 1
    )
    assert (
        value(
            after, "oe_socketio_connections", namespace="/public", transport="polling"
        )
        == 1
    )
    # 3 + 1 echoes, the unknown event, send_and_broadcast.
    assert delta("oe_socketio_events_received_total", namespace="/public") == 6
    assert (
        delta("oe_socketio_refusals_total", namespace="/public", code="unknown_event")
        == 1
    )
    assert (
        delta("oe_socketio_refusals_total", namespace="*", code="unknown_namespace")
        == 1
    )
    assert (
        delta("oe_socketio_refusals_total", namespace="/refusing", code="closed") == 1
    )
    # One emit to the namespace, whatever its two recipients.
    assert delta("oe_socketio_emits_total", namespace="/public") >= 1
    assert value(after, "oe_socketio_broker_info", broker="LocalBroker") == 1
    assert value(after, "process_resident_memory_bytes") > 0

    after_close = scrape(server.url)
    assert value(after_close, "oe_socketio_clients") == 0


def test_health_counters_become_metrics_by_database():
    listeners = {
        "oe": {"state": "listening", "failures": 2, "delivered": 7, "messages": 5},
        "two": {"state": "reconnecting", "failures": 0, "delivered": 0, "messages": 0},
    }
    families = {f.name: f for f in _translate("listeners", listeners)}
    up = {
        s.labels["database"]: s.value
        for s in families["oe_socketio_listener_up"].samples
    }
    assert up == {"oe": 1, "two": 0}
    delivered = families["oe_socketio_messages_delivered"].samples
    assert (delivered[0].name, delivered[0].labels, delivered[0].value) == (
        "oe_socketio_messages_delivered_total",
        {"database": "oe"},
        5,
    )
    pools = {
        f.name: f
        for f in _translate("pools", {"oe": {"in_use": 1, "idle": 2, "waiting": 3}})
    }
    assert pools["oe_socketio_pool_waiting"].samples[0].value == 3
    # A number unknown here is a gauge; anything else is left out.
    assert [f.name for f in _translate("greenlets", 4)] == ["oe_socketio_greenlets"]
    assert list(_translate("strange", {"a": "b"})) == []
