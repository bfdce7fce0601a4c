"""The fan-out across workers, in this process: the settings, the choice
of python-socketio's client manager, what a PostgreSQL manager does with
the notifications it reads, presence in memory. Two real workers on a
real database and a real Redis: tests/test_workers*.py of the appliance."""

from __future__ import annotations

import json

import pytest
import socketio
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ConfigError
from oe_web_socketio.pubsub.fanout import (
    PostgresManager,
    RedisManager,
    client_manager,
    manager_state,
)
from oe_web_socketio.pubsub.presence import LocalPresence, Present


def test_the_broker_settings_are_checked():
    assert Config().broker == "local"
    assert Config(broker="postgresql").broker == "postgresql"
    with pytest.raises(ConfigError, match="one of local, postgresql, redis"):
        Config(broker="kafka")
    with pytest.raises(ConfigError, match="needs broker_url"):
        Config(broker="redis")
    with pytest.raises(ConfigError, match="not a Redis URL"):
        Config(broker="redis", broker_url="http://example.com")
    config = Config(broker="redis", broker_url="redis://127.0.0.1:6380/0")
    assert config.broker_url == "redis://127.0.0.1:6380/0"


def test_the_client_manager_follows_the_broker():
    local = client_manager("local", database=None, conninfo=None, url=None)
    assert type(local) is socketio.Manager
    assert manager_state(local) == {"backend": "local"}
    postgres = client_manager("postgresql", database="oe", conninfo="", url=None)
    assert isinstance(postgres, PostgresManager)
    redis = client_manager(
        "redis", database=None, conninfo=None, url="redis://127.0.0.1:1/0"
    )
    assert isinstance(redis, RedisManager)
    assert manager_state(redis)["published"] == 0
    with pytest.raises(ConfigError, match="needs a database"):
        client_manager("postgresql", database=None, conninfo=None, url=None)


def test_a_lone_worker_publishes_nothing_until_another_speaks():
    manager = PostgresManager("oe", "")
    manager._publish({"method": "emit", "host_id": manager.host_id})
    assert manager._outgoing.empty()
    own = json.dumps({"method": "hello", "host_id": manager.host_id})
    manager._notified(None, [own])  # no spilled message: no query
    assert manager.peers is False
    assert manager._queue.empty()  # its own: dropped before decoding
    other = json.dumps({"method": "emit", "event": "x", "host_id": "another"})
    manager._notified(None, [own, other])
    assert manager.peers is True
    assert manager._queue.get_nowait() == other
    assert manager.received == 1
    # A callback for this worker names it, but not last: it is kept.
    callback = json.dumps(
        {"method": "callback", "host_id": manager.host_id, "sid": "s", "id": 1}
    )
    manager._notified(None, [callback])
    assert manager._queue.get_nowait() == callback


def test_identical_emits_are_published_as_distinct_notifications():
    manager = PostgresManager("oe", "")
    manager.peers = True
    manager._sender = object()  # no sending here
    for _ in range(2):
        manager._publish({"method": "emit", "data": ["same"], "host_id": "h"})
    first, second = (json.loads(manager._outgoing.get_nowait()) for _ in range(2))
    assert first != second
    assert first["data"] == second["data"] == ["same"]


def test_local_presence():
    presence = LocalPresence()
    ada, bob = Present("s1", 1, "ada"), Present("s2", 2, "bob")
    presence.enter("/chat", "oe", "", ada)
    presence.enter("/chat", "oe", "", bob)
    presence.enter("/chat", "oe", "room", bob)
    presence.enter("/other", "oe", "", ada)
    assert presence.members("/chat", "oe", "") == [ada, bob]
    assert presence.members("/chat", "oe", "room") == [bob]
    presence.leave("/chat", "s2", "room")
    assert presence.members("/chat", "oe", "room") == []
    presence.leave("/chat", "s1", None)
    assert presence.members("/chat", "oe", "") == [bob]
    assert presence.members("/other", "oe", "") == [ada]
    assert bob.as_dict() == {"sid": "s2", "uid": 2, "login": "bob"}
