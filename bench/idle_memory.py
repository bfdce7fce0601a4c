"""Memory per idle connection: the server's RSS growth for N idle sockets.

Opens N Socket.IO connections (WebSocket, namespace /bench) that then stay
idle, and reports (RSS with N connections - RSS before) / N. The server is
warmed up first with a few connections opened and closed, so that imports
and first-use caches are not charged to the connections.

Usage: bin/python bench/idle_memory.py --target oe --connections 2000
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import socketio  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    disconnect_all,
    free_port,
    raise_nofile_limit,
    rss_bytes,
    start_target,
    stop,
    watchdog,
)

NAMESPACE = "/bench"


def connect(url: str) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(
        url, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=30
    )
    return client


def open_clients(url: str, count: int) -> list[socketio.Client]:
    clients: list[socketio.Client] = []
    for batch in range(0, count, 100):
        jobs = [gevent.spawn(connect, url) for _ in range(min(100, count - batch))]
        gevent.joinall(jobs, raise_error=True)
        clients.extend(job.value for job in jobs)
    return clients


def settle() -> None:
    # Let the server finish handshakes and its first pings.
    gevent.sleep(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("plain", "oe"), default="oe")
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    # A client holds one descriptor, the server two (simple-websocket
    # duplicates the socket); the server inherits this limit.
    limit = raise_nofile_limit()
    if 2 * args.connections + 100 > limit:
        raise SystemExit(f"{args.connections} connections need more than {limit} fds")
    watchdog(120 + args.connections / 20)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_target(args.target, port)
    try:
        # Warm-up connections stay open: after a WebSocket, plain gevent
        # reads the connection's next bytes as HTTP, and simple-websocket's
        # reader of a closed connection may then never end (a leak that
        # would be charged to the measured connections).
        warm = open_clients(url, 20)
        settle()
        before = rss_bytes(server.pid)
        started = time.time()
        clients = open_clients(url, args.connections)
        opened = time.time() - started
        settle()
        after = rss_bytes(server.pid)
        left = disconnect_all([*warm, *clients])
        if left:
            print(f"# {left} client(s) still disconnecting after 30 s", file=sys.stderr)
    finally:
        stop(server)
    per_connection = (after - before) / args.connections
    print(
        "| target | connections | RSS before (MiB) | RSS after (MiB)"
        " | KiB per connection | connect/s |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.target} | {args.connections} | {before / 2**20:.1f}"
        f" | {after / 2**20:.1f} | {per_connection / 1024:.1f}"
        f" | {args.connections / opened:.0f} |"
    )


if __name__ == "__main__":
    main()
