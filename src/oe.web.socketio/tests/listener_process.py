"""A :class:`~oe_web_socketio.listener.Listener` in a process of its own,
patched for gevent as the server is (tests/test_listener.py starts it).

Usage: ``python listener_process.py CONNINFO APPLICATION_NAME``. It listens
on the channels ``one`` and ``two`` and prints one JSON line per event on
stdout: ``["connected", backend_pid]`` after each ``LISTEN``, ``["batch",
channel, payloads]`` for each batch a handler gets. A payload ``raise``
makes the handler raise. SIGTERM ends it.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from oe_web_socketio.patch import patch

patch()

import gevent  # noqa: E402 (after the patch)
import psycopg  # noqa: E402
from oe_web_socketio.listener import Listener  # noqa: E402


def say(*event: Any) -> None:
    print(json.dumps(event), flush=True)


def handler(channel: str) -> Any:
    def handle(conn: psycopg.Connection, payloads: list[str]) -> None:
        if "raise" in payloads:
            raise RuntimeError("the handler failed")
        say("batch", channel, payloads)

    return handle


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    conninfo, application_name = sys.argv[1:3]
    listener = Listener(
        "test",
        conninfo,
        {"one": handler("one"), "two": handler("two")},
        on_connect=lambda conn: say("connected", conn.info.backend_pid),
        application_name=application_name,
    )
    listener.backoff_min = 0.05
    listener.keepalive = 1.0
    listener.start()
    gevent.wait()


if __name__ == "__main__":
    main()
