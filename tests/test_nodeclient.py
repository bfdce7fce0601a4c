"""The Node.js harness: the official socket.io-client, driven from Python
(tests/nodeclient.py), against the running appliance through nginx."""

import signal
import socket

import pytest

from . import nodeclient
from .nodeclient import ConnectRefused, NodeClient, NodeClientError, NodeClientTimeout


def _closed_port() -> int:
    """A local port nothing listens on (just released by the kernel)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_handshake_and_clean_disconnect(appliance, transport):
    with NodeClient(appliance.url, transports=(transport,)) as client:
        connected = client.wait_connected(timeout=15)
        assert connected["id"]
        assert connected["transport"] == transport
        status = client.status()
        assert status["connected"] is True
        assert status["sid"] == connected["id"]
        assert status["transport"] == transport

        assert client.disconnect() == "io client disconnect"
        assert client.status()["connected"] is False
    assert client.returncode == 0, client.stderr
    assert client.messages[-1] == {"type": "close"}
    assert not [m for m in client.messages if m["type"] in {"upgrade", "error"}]


def test_reconnect_after_disconnect(appliance):
    with NodeClient(appliance.url) as client:
        first = client.wait_connected(timeout=15)
        client.disconnect()
        second = client.connect(timeout=15)
        assert second["transport"] == "websocket"
        assert second["id"] != first["id"]
    assert client.returncode == 0, client.stderr


def test_polling_upgrades_to_websocket(appliance):
    with NodeClient(appliance.url, transports=("polling", "websocket")) as client:
        opened = client.wait_type("open", timeout=15)
        assert opened["transport"] == "polling"
        client.wait_connected(timeout=15)
        assert client.wait_type("upgrade", timeout=15)["transport"] == "websocket"
        assert client.status()["transport"] == "websocket"
    assert client.returncode == 0, client.stderr


def test_unknown_namespace_is_refused_by_the_server(appliance):
    client = NodeClient(appliance.url, namespace="/no-such-namespace")
    with client, pytest.raises(ConnectRefused) as refused:
        client.wait_connected(timeout=15)
    # The server answered (a refusal has a payload), the transport worked.
    assert refused.value.payload is not None
    assert refused.value.description is None
    assert not client.events("connect")
    assert client.returncode == 0, client.stderr


def test_emits_with_and_without_acknowledgement_and_bounded_waits(appliance):
    with NodeClient(appliance.url) as client:
        client.wait_connected(timeout=15)
        # Without an ack the server's answer comes as an event.
        assert client.emit("nodeclient-test-no-handler", 1, ack=False) is None
        error = client.wait_event("error")
        assert error[0]["error"]["code"] in {"forbidden", "unknown_event"}
        # With one, the answer is the ack (a list of its arguments).
        (answer,) = client.emit("nodeclient-test-no-handler", {"a": [1, 2]})
        assert answer["error"]["code"] in {"forbidden", "unknown_event"}
        with pytest.raises(NodeClientTimeout):
            client.wait_event("never-sent", timeout=1)
    assert client.returncode == 0, client.stderr


def test_transport_failure_is_reported():
    url = f"http://127.0.0.1:{_closed_port()}"
    client = NodeClient(url, transports=("websocket",))
    with client, pytest.raises(ConnectRefused) as refused:
        client.wait_connected(timeout=15)
    assert refused.value.payload is None
    assert "ECONNREFUSED" in refused.value.description


def test_missing_node_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(NodeClientError, match="node is not on PATH"):
        NodeClient("http://127.0.0.1:1").start()


def test_missing_node_modules_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(nodeclient, "PACKAGE", tmp_path / "package.json")
    with pytest.raises(NodeClientError, match="run `make build`"):
        NodeClient("http://127.0.0.1:1").start()


def _fake_node(tmp_path, body: str) -> str:
    """A stand-in for node that runs the shell ``body`` instead."""
    fake = tmp_path / "node"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return str(fake)


def test_a_client_that_exits_early_fails_the_wait(tmp_path):
    node = _fake_node(tmp_path, "echo 'cannot start' >&2; exit 3")
    client = NodeClient("http://127.0.0.1:1", node=node)
    with client, pytest.raises(NodeClientError, match="cannot start") as failed:
        client.wait_connected(timeout=10)
    assert "exit status 3" in str(failed.value)
    assert client.returncode == 3


def test_close_kills_a_client_that_does_not_exit(tmp_path):
    client = NodeClient(
        "http://127.0.0.1:1", node=_fake_node(tmp_path, "exec sleep 60")
    )
    client.close_timeout = 0.5
    with client, pytest.raises(NodeClientTimeout):
        client.wait_connected(timeout=0.5)
    assert client.returncode == -signal.SIGKILL
