"""Broadcast fan-out: C clients in one channel, M messages published to it.

Measures, for the target server (see common.start_target):

* deliveries per second (C x M deliveries over the time from the first
  publish to the last delivery),
* latency from publish to delivery (p50, p99, max; one machine, one clock),
* server CPU time per delivery (from /proc, so the load generator's own CPU
  is not counted),
* lost messages (expected minus delivered, after a drain period).

The clients and the publisher are python-socketio clients in this process,
made cooperative by gevent; the publisher sends at a fixed rate so that
latency measures the server, not a queue the benchmark built up.

Usage: bin/python bench/fanout.py --target oe --clients 200 --messages 200
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import socketio  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    cpu_seconds,
    free_port,
    percentile,
    start_target,
    stop,
)

CHANNEL = "bench"
NAMESPACE = "/bench"


def connect(url: str, transport: str) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(url, namespaces=[NAMESPACE], transports=[transport], wait_timeout=30)
    return client


def run(args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_target(args.target, port)
    try:
        latencies: list[float] = []
        received = [0]

        def on_message(message, channel=None):
            latencies.append(time.time() - message["ts"])
            received[0] += 1

        clients = []
        for batch in range(0, args.clients, 50):
            jobs = [
                gevent.spawn(connect, url, args.transport)
                for _ in range(min(50, args.clients - batch))
            ]
            gevent.joinall(jobs, raise_error=True)
            clients.extend(job.value for job in jobs)
        for client in clients:
            client.on("message", on_message, namespace=NAMESPACE)
            assert client.call("subscribe", CHANNEL, namespace=NAMESPACE, timeout=30)
        publisher = connect(url, args.transport)

        payload = "x" * args.size
        expected = args.clients * args.messages
        cpu_before = cpu_seconds(server.pid)
        started = time.time()
        interval = 1.0 / args.rate
        for seq in range(args.messages):
            publisher.emit(
                "publish",
                {"channel": CHANNEL, "seq": seq, "ts": time.time(), "data": payload},
                namespace=NAMESPACE,
            )
            gevent.sleep(max(0.0, started + (seq + 1) * interval - time.time()))
        deadline = time.time() + args.drain
        while received[0] < expected and time.time() < deadline:
            gevent.sleep(0.05)
        finished = time.time()
        cpu = cpu_seconds(server.pid) - cpu_before
        for client in [*clients, publisher]:
            client.disconnect()
    finally:
        stop(server)

    latencies.sort()
    delivered = received[0]
    elapsed = finished - started
    return {
        "target": args.target,
        "transport": args.transport,
        "clients": args.clients,
        "messages": args.messages,
        "rate": args.rate,
        "delivered": delivered,
        "lost": expected - delivered,
        "deliveries_per_s": round(delivered / elapsed),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round((latencies[-1] if latencies else float("nan")) * 1000, 1),
        "cpu_us_per_delivery": round(cpu / max(delivered, 1) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("plain", "oe"), default="oe")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20, help="messages/s")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--drain", type=float, default=30, help="seconds")
    parser.add_argument("--transport", choices=("websocket", "polling"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.transport = args.transport or "websocket"
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    keys = list(result)
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    print("| " + " | ".join(str(result[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
