"""Two workers fanning out through Redis (``broker = redis``): Debian's
``redis-server``, started here on a free port, and python-socketio's
RedisManager; then Redis goes away and comes back.

The workers of tests/test_fanout_workers.py (``postgresql``) are stopped by then:
workers of one database that disagree on their broker refuse to start.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid

import pytest

from .realtime import Recorder, ServerProcess
from .test_fanout_workers import (
    NAMESPACE,
    cross_worker_emits,
    start_workers,
    wait_for,
)
from .tryton import free_port

pytestmark = pytest.mark.timeout(300)


class RedisServer(ServerProcess):
    """``redis-server`` on 127.0.0.1:*port*, without persistence."""

    name = "redis-server"

    def __init__(self, directory, port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("no redis-server: apt-get install redis-server (make build)")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        command = [binary, "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        self.start(command, directory / "redis.log", None)

    def ready(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            if not conn.recv(16).startswith(b"+PONG"):
                raise OSError("not ready")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("redis")
    server = RedisServer(directory, free_port())
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def workers(appliance, trytond, redis_server, tmp_path_factory):
    started = start_workers(
        appliance,
        trytond.database,
        tmp_path_factory.mktemp("redis_workers"),
        {"broker": "redis", "broker_url": redis_server.url},
    )
    yield started
    for worker in started:
        worker.stop()


def test_emits_cross_workers_through_redis(workers):
    channel = f"r-{uuid.uuid4().hex[:8]}"
    cross_worker_emits(workers, channel)
    fanout = workers[0].health()["fanout"]
    assert fanout["backend"] == "redis"
    assert fanout["published"] > 0
    assert fanout["received"] > 0


def test_workers_serve_their_own_clients_while_redis_is_away(
    workers, redis_server, tmp_path
):
    channel = f"r-{uuid.uuid4().hex[:8]}"
    here = Recorder(workers[0].url, NAMESPACE, "websocket")
    neighbour = Recorder(workers[0].url, NAMESPACE, "polling")
    there = Recorder(workers[1].url, NAMESPACE, "websocket")
    try:
        for recorder in (here, neighbour, there):
            recorder.call("subscribe", channel)
        redis_server.stop()
        # Redis is away: the worker's own clients still get its emits, and
        # the worker says so; nobody is disconnected.
        here.call("say", channel, "while away")
        assert neighbour.wait_message(lambda *a: a == ("while away", channel))
        wait_for(lambda: workers[0].health()["fanout"]["errors"] > 0, "an error")
        assert here.client.connected and there.client.connected
        # Back on the same port: emits cross again.
        restarted = RedisServer(tmp_path, redis_server.port)
        try:

            def crosses() -> bool:
                text = f"back {time.monotonic_ns()}"
                here.call("say", channel, text)
                try:
                    there.wait_message(lambda *a: a == (text, channel), timeout=0.5)
                except AssertionError:
                    return False
                return True

            wait_for(crosses, "emits crossing again", 60)
        finally:
            restarted.stop()
    finally:
        for recorder in (here, neighbour, there):
            recorder.disconnect()
