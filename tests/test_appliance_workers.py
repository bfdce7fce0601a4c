"""support/appliance_workers.py: what the buildout computes for the
real-time workers from [settings] socketio-workers and
socketio-remote-workers, and the messages of bad settings."""

from __future__ import annotations

import re

import pytest

appliance_workers = pytest.importorskip(
    "appliance_workers", reason="bin/test predates support/: run bin/buildout"
)

PROGRAM = "command = oe_web_socketio --worker {name} --port {port}\nstartsecs = 2"


def rendered(workers: str, remote: str = "", port: int = 8068) -> dict[str, str]:
    options = {
        "workers": workers,
        "remote": remote,
        "port": str(port),
        "server-options": "max_fails=1 fail_timeout=5s",
        "program": PROGRAM,
    }
    appliance_workers.render(options)
    return options


def test_auto_is_the_core_count_of_this_process():
    cores = appliance_workers.core_count()
    assert cores >= 1
    assert rendered("auto")["count"] == rendered("")["count"] == str(cores)


def test_two_workers_on_consecutive_ports():
    options = rendered("2", port=9000)
    assert (options["count"], options["names"]) == ("2", "w0 w1")
    supervisor = options["supervisor"]
    assert "[program:w0]\ncommand = oe_web_socketio --worker w0 --port 9000\n" in (
        supervisor
    )
    assert "[program:w1]\ncommand = oe_web_socketio --worker w1 --port 9001\n" in (
        supervisor
    )
    assert supervisor.endswith("[group:oe_web_socketio]\nprograms = w0,w1\n")
    assert options["nginx-map"].split("\n") == [
        r"        ~^w0\. oe_web_socketio_w0;",
        r"        ~^w1\. oe_web_socketio_w1;",
    ]
    assert options["nginx-servers"].split("\n") == [
        "        server 127.0.0.1:9000 max_fails=1 fail_timeout=5s;",
        "        server 127.0.0.1:9001 max_fails=1 fail_timeout=5s;",
    ]
    upstreams = re.findall(
        r"upstream (\S+) \{\s*server (\S+);\s*\}", options["nginx-upstreams"]
    )
    assert upstreams == [
        ("oe_web_socketio_w0", "127.0.0.1:9000"),
        ("oe_web_socketio_w1", "127.0.0.1:9001"),
    ]


def test_remote_workers_join_nginx_not_supervisor():
    options = rendered(
        "1", "# the second machine\nn2 192.0.2.20:8068\n\nn3 [2001:db8::3]:8068  # v6\n"
    )
    assert options["names"] == "w0"
    assert "n2" not in options["supervisor"]
    assert r"~^n2\. oe_web_socketio_n2;" in options["nginx-map"]
    assert "server 192.0.2.20:8068 max_fails" in options["nginx-servers"]
    assert "server [2001:db8::3]:8068 max_fails" in options["nginx-servers"]
    assert (
        "upstream oe_web_socketio_n3 {\n        server [2001:db8::3]:8068;"
        in (options["nginx-upstreams"])
    )


@pytest.mark.parametrize(
    ("workers", "remote", "message"),
    [
        ("0", "", "socketio-workers: a number from 1 to 64, or auto, not '0'"),
        ("two", "", "socketio-workers: a number from 1 to 64, or auto, not 'two'"),
        ("1", "n2", "socketio-remote-workers: each line is NAME HOST:PORT"),
        ("1", "n.2 h:1", "socketio-remote-workers: each line is NAME HOST:PORT"),
        ("1", "n2 h:99999", "socketio-remote-workers: no port 99999"),
        ("2", "w1 192.0.2.1:8068", "two real-time workers have the name w1"),
        (
            "2",
            "n2 127.0.0.1:8069",
            "two real-time workers have the address 127.0.0.1:8069",
        ),
    ],
)
def test_bad_settings_are_named(workers, remote, message):
    with pytest.raises(appliance_workers.WorkersError) as info:
        rendered(workers, remote)
    assert message in str(info.value)
