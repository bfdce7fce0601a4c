"""Broadcast fan-out: C clients in one channel, M messages published to it.

Measures, for the target server (see common.start_target):

* deliveries per second (deliveries over the time from the first publish
  to the last delivery; at most C x rate while the server keeps up),
* latency from publish to delivery (p50, p99, max; one machine, one clock),
* server CPU time per delivery, and the server's CPU use (CPU seconds over
  wall seconds: 100 % is one core saturated),
* the load generator's CPU use, the busiest client process's: near 100 %
  it, not the server, is the bottleneck (use more ``--workers``),
* lost messages (expected minus delivered, after a drain period).

The C receiving clients are python-socketio clients, cooperative by
gevent, in ``--workers`` processes of their own; the publisher is one more
client, in this process, which sends at a fixed rate so that latency
measures the server, not a queue the benchmark built up.

Usage: bin/python bench/fanout.py --target oe --clients 200 --messages 200
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import socketio  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    cpu_seconds,
    die_with_parent,
    disconnect_all,
    free_port,
    own_cpu_seconds,
    percentile,
    raise_nofile_limit,
    read_line,
    start_target,
    stop,
    watchdog,
)

CHANNEL = "bench"
NAMESPACE = "/bench"
#: Seconds a client has to connect, or to have its call answered.
CONNECT_TIMEOUT = 30


def connect(url: str, transport: str) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(
        url,
        namespaces=[NAMESPACE],
        transports=[transport],
        wait_timeout=CONNECT_TIMEOUT,
    )
    return client


def publish_paced(
    publisher, messages: int, rate: float, size: int, started: float
) -> None:
    """Publish *messages* of *size* bytes to :data:`CHANNEL`, the n-th at
    ``started + n / rate`` (the schedule, not the previous send, sets the
    pace), each stamped with its ``seq`` and send time ``ts``."""
    payload = "x" * size
    interval = 1.0 / rate
    for seq in range(messages):
        publisher.emit(
            "publish",
            {"channel": CHANNEL, "seq": seq, "ts": time.time(), "data": payload},
            namespace=NAMESPACE,
        )
        gevent.sleep(max(0.0, started + (seq + 1) * interval - time.time()))


def open_clients(url: str, count: int, transport: str) -> list[socketio.Client]:
    clients: list[socketio.Client] = []
    for batch in range(0, count, 50):
        jobs = [
            gevent.spawn(connect, url, transport) for _ in range(min(50, count - batch))
        ]
        gevent.joinall(jobs, raise_error=True)
        clients.extend(job.value for job in jobs)
    return clients


# --- worker: a process of receiving clients


def run_worker(args: argparse.Namespace) -> None:
    """Connect and subscribe ``args.clients`` clients, print ``ready``,
    count deliveries until all ``args.clients * args.messages`` arrived or
    ``args.deadline`` seconds passed since the first one, print the result
    as one JSON line."""
    latencies_us: list[int] = []
    last = [0.0]

    def on_message(message, channel=None):
        now = time.time()
        latencies_us.append(round((now - message["ts"]) * 1e6))
        last[0] = now

    clients = open_clients(args.url, args.clients, args.transport)
    for client in clients:
        client.on("message", on_message, namespace=NAMESPACE)
        if not client.call(
            "subscribe", CHANNEL, namespace=NAMESPACE, timeout=CONNECT_TIMEOUT
        ):
            raise SystemExit("subscribe refused")
    print("ready", flush=True)
    cpu_before = own_cpu_seconds()
    expected = args.clients * args.messages
    # The clock starts at the first delivery: the other client processes
    # may still be connecting when this one is ready.
    deadline = time.time() + CONNECT_TIMEOUT * 4 + args.deadline
    while not latencies_us and time.time() < deadline:
        gevent.sleep(0.05)
    deadline = time.time() + args.deadline
    while len(latencies_us) < expected and time.time() < deadline:
        gevent.sleep(0.05)
    result = {
        "latencies_us": latencies_us,
        "last_delivery": last[0],
        "cpu_s": own_cpu_seconds() - cpu_before,
    }
    print(json.dumps(result), flush=True)
    disconnect_all(clients)


# --- the benchmark


def start_workers(args: argparse.Namespace, url: str) -> list[subprocess.Popen]:
    sizes = [args.clients // args.workers] * args.workers
    sizes[0] += args.clients - sum(sizes)
    deadline = args.messages / args.rate + args.drain
    workers = []
    for size in sizes:
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--url",
            url,
            "--clients",
            str(size),
            "--messages",
            str(args.messages),
            "--transport",
            args.transport,
            "--deadline",
            str(deadline),
        ]
        workers.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                text=True,
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no real threads
            )
        )
    return workers


def run(args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_target(args.target, port)
    workers: list[subprocess.Popen] = []
    try:
        workers = start_workers(args, url)
        for worker in workers:
            if read_line(worker, 120, "ready").strip() != "ready":
                raise SystemExit("a client process failed to start")
        publisher = connect(url, args.transport)

        cpu_before = cpu_seconds(server.pid)
        started = time.time()
        publish_paced(publisher, args.messages, args.rate, args.size, started)
        results = [
            json.loads(read_line(worker, args.drain + 180, "result"))
            for worker in workers
        ]
        cpu = cpu_seconds(server.pid) - cpu_before
        disconnect_all([publisher])
        for worker in workers:
            worker.wait(60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        stop(server)

    latencies = sorted(us / 1e6 for r in results for us in r["latencies_us"])
    delivered = len(latencies)
    elapsed = max([r["last_delivery"] for r in results] + [started]) - started
    elapsed = max(elapsed, 1e-9)
    return {
        "target": args.target,
        "transport": args.transport,
        "clients": args.clients,
        "messages": args.messages,
        "rate": args.rate,
        "workers": args.workers,
        "delivered": delivered,
        "lost": args.clients * args.messages - delivered,
        "deliveries_per_s": round(delivered / elapsed),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round((latencies[-1] if latencies else float("nan")) * 1000, 1),
        "server_cpu_us_per_delivery": round(cpu / max(delivered, 1) * 1e6, 1),
        "server_cpu_pct": round(cpu / elapsed * 100),
        "client_cpu_pct": round(max(r["cpu_s"] for r in results) / elapsed * 100),
    }


def median_row(rows: list[dict]) -> dict:
    """The median of each figure over *rows* (the same parameters)."""
    merged = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and key not in ("clients", "messages"):
            merged[key] = round(statistics.median(row[key] for row in rows), 1)
    merged["target"] = f"{rows[0]['target']} (median of {len(rows)})"
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("plain", "oe"), default="oe")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20, help="messages/s")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--drain", type=float, default=30, help="seconds")
    parser.add_argument(
        "--transport", choices=("websocket", "polling"), default="websocket"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="client processes (default 1)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs; adds a median")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile_limit()
    if args.worker:
        run_worker(args)
        return
    # Connecting, the messages, the drain, and a margin for teardown.
    watchdog(args.repeat * (240 + args.messages / args.rate + args.drain))
    rows = []
    for _ in range(args.repeat):
        rows.append(run(args))
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        return
    if len(rows) > 1:
        rows.append(median_row(rows))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
