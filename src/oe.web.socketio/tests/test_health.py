"""Tests of :mod:`oe_web_socketio.health`: the endpoint alone, then the
route of a real server process."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest
import requests
import socketio
from oe_web_socketio import __version__
from oe_web_socketio.health import PATH, Health, health_route
from oe_web_socketio.routing import Request

pytestmark = pytest.mark.timeout(30)


def test_endpoint_reports_version_databases_and_live_client_count():
    clients = [0]
    health = Health(
        version="1.2", databases=["a", "b"], count_clients=lambda: clients[0]
    )
    request = Request({"REQUEST_METHOD": "GET", "PATH_INFO": PATH})
    first = health(request)
    clients[0] = 7
    second = health(request)
    assert first.status == HTTPStatus.OK
    assert json.loads(first.body) == {
        "status": "ok",
        "version": "1.2",
        "worker": None,
        "databases": ["a", "b"],
        "clients": 0,
    }
    assert json.loads(second.body)["clients"] == 7
    assert ("Cache-Control", "no-store") in second.headers


def test_counters_follow_the_clients():
    health = Health(
        version="1",
        databases=["oe"],
        count_clients=lambda: 1,
        counters={"greenlets": lambda: 3},
    )
    body = json.loads(health(Request({"REQUEST_METHOD": "GET"})).body)
    assert (body["clients"], body["greenlets"]) == (1, 3)


def test_a_worker_says_its_name():
    health = Health(version="1", databases=["oe"], count_clients=lambda: 0, worker="w1")
    assert json.loads(health(Request({"REQUEST_METHOD": "GET"})).body)["worker"] == "w1"


def test_route_accepts_get_and_head_only():
    route = health_route(version="1", databases=["oe"], count_clients=lambda: 0)
    assert route.path == "/health"
    assert route.methods == {"GET", "HEAD"}


def test_health_of_a_running_server(spawn_server):
    server = spawn_server("-d", "oe,other")
    response = requests.get(f"{server.url}/health", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "worker": None,
        "databases": ["oe", "other"],
        "clients": 0,
        "greenlets": 0,
        # Without a database bridge, the in-process broker (of the first
        # database): what it delivered, what it keeps for resumes.
        "local": {"oe": {"delivered": 0, "kept": 0}},
        # One process: python-socketio's own manager, nothing crosses.
        "fanout": {"backend": "local"},
    }

    head = requests.head(f"{server.url}/health", timeout=5)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == response.headers["Content-Length"]

    post = requests.post(f"{server.url}/health", timeout=5)
    assert post.status_code == 405
    assert post.headers["Allow"] == "GET, HEAD"

    missing = requests.get(f"{server.url}/nowhere", timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found"}


def test_health_counts_connected_clients(spawn_server, wait_until):
    server = spawn_server()

    def clients():
        return requests.get(f"{server.url}/health", timeout=5).json()["clients"]

    client_a = socketio.Client(reconnection=False)
    client_b = socketio.Client(reconnection=False)
    try:
        client_a.connect(server.url, transports=["websocket"], wait_timeout=10)
        client_b.connect(server.url, transports=["polling"], wait_timeout=10)
        assert clients() == 2
        client_a.disconnect()
        wait_until(lambda: clients() == 1)
    finally:
        client_a.disconnect()
        client_b.disconnect()
    wait_until(lambda: clients() == 0)
