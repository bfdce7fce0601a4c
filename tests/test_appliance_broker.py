"""support/appliance_broker.py: supervisor's program of the appliance's
own Redis exists where [settings] broker = redis names it, and nowhere
else."""

from __future__ import annotations

import pytest
from appliance_broker import BrokerError, render

OWN = "redis://127.0.0.1:6380/0"
PROGRAM = "command = bin/redis\nstartsecs = 2"


def rendered(broker: str, url: str = OWN) -> dict[str, str]:
    options = {"broker": broker, "url": url, "own": OWN, "program": PROGRAM}
    render(options)
    return options


def test_the_appliance_runs_its_own_redis_only_for_the_redis_broker():
    options = rendered("redis")
    assert options["runs"] == "true"
    assert options["supervisor"] == f"[program:redis]\n{PROGRAM}\n"
    for broker, url in (
        ("postgresql", OWN),
        ("local", OWN),
        ("redis", "redis://redis.example.com:6379/0"),  # another machine's
    ):
        options = rendered(broker, url)
        assert (options["runs"], options["supervisor"]) == ("false", "")


def test_a_broker_nobody_knows_fails_the_buildout_with_its_name():
    with pytest.raises(BrokerError, match=r"\[settings\] broker: 'rabbitmq' is not"):
        rendered("rabbitmq")
