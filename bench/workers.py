"""Several workers: what the fan-out costs per emit, and chat latency from
one worker to another.

Workers are the appliance's ``bin/oe_web_socketio`` on free loopback
ports, serving the bench database of ``bench/bridge_latency.py`` (created
on the appliance's PostgreSQL, dropped at the end) with the namespace
``/workers`` of tests/worker_namespaces.py (anonymous ``subscribe`` and
``say``, which is ``broadcast_channel``). Clients are python-socketio's
(WebSocket), in this process.

* ``emit``: one worker, one client that says *--emits* lines on a
  channel, each acknowledged before the next, and one subscriber that
  receives them: the worker's CPU per emit (from /proc) and emits per
  second, with ``broker = local``, ``postgresql`` alone (a lone worker
  publishes nothing) and ``postgresql`` with a second, idle worker
  listening (one ``NOTIFY`` per emit);
* ``chat``: two workers (``postgresql``, and ``redis`` with
  ``--redis-url``), a client on the first says a line every *--interval*
  seconds with the time it was sent, a subscriber on the second
  receives it: latency p50, p99, max over *--messages* lines.

Usage: bin/python bench/workers.py [--emits 2000] [--messages 500]
           [--interval 0.01] [--redis-url redis://127.0.0.1:6380/0]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_latency import (
    create_database,
    drop_database,
    health,
    server_uri,
    start_server,
)
from common import cpu_seconds, free_port, percentile, stop, watchdog

NAMESPACE = "/workers"
SERVED = f"{NAMESPACE}=worker_namespaces:WorkersNamespace"


def worker(uri: str, workdir: Path, settings: dict[str, str]):
    port = free_port()
    process = start_server(uri, workdir, port, settings=settings, namespace=SERVED)
    return process, f"http://127.0.0.1:{port}"


def client(url: str) -> socketio.Client:
    sio = socketio.Client(reconnection=False)
    sio.connect(url, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=10)
    return sio


def wait_peers(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not health(url)["fanout"].get("peers", True):
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} sees no peer")
        time.sleep(0.1)


def emit_cost(uri: str, workdir: Path, emits: int, broker: str, peer: bool) -> str:
    settings = {"broker": broker}
    processes = []
    try:
        process, url = worker(uri, workdir, settings)
        processes.append(process)
        if peer:
            other, _ = worker(uri, workdir, settings)
            processes.append(other)
            wait_peers(url)
        talker, listener = client(url), client(url)
        got = threading.Semaphore(0)
        listener.on("message", lambda *args: got.release(), namespace=NAMESPACE)
        for sio in (talker, listener):
            sio.call("subscribe", "bench", namespace=NAMESPACE, timeout=10)
        before, start = cpu_seconds(process.pid), time.monotonic()
        for number in range(emits):
            talker.call("say", ("bench", number), namespace=NAMESPACE, timeout=10)
        for _ in range(emits):
            if not got.acquire(timeout=30):
                raise SystemExit("a line did not arrive")
        elapsed, cpu = time.monotonic() - start, cpu_seconds(process.pid) - before
        for sio in (talker, listener):
            sio.disconnect()
        label = f"{broker}{' + idle peer' if peer else ''}"
        return (
            f"| emit | {label} | {emits} | {emits / elapsed:,.0f} emits/s "
            f"| {cpu / emits * 1e6:,.0f} µs CPU per emit |"
        )
    finally:
        for process in processes:
            stop(process)


def chat_latency(
    uri: str, workdir: Path, messages: int, interval: float, settings: dict[str, str]
) -> str:
    processes = []
    try:
        first, url0 = worker(uri, workdir, settings)
        second, url1 = worker(uri, workdir, settings)
        processes += [first, second]
        wait_peers(url0)
        wait_peers(url1)
        talker, listener = client(url0), client(url1)
        latencies: list[float] = []
        done = threading.Event()

        def received(text, _channel=None):
            latencies.append(time.time() - float(text))
            if len(latencies) >= messages:
                done.set()

        listener.on("message", received, namespace=NAMESPACE)
        for sio in (talker, listener):
            sio.call("subscribe", "chat", namespace=NAMESPACE, timeout=10)
        # Crossing already: one line first, not counted.
        talker.call("say", ("chat", repr(time.time())), namespace=NAMESPACE)
        time.sleep(0.5)
        latencies.clear()
        for _ in range(messages):
            talker.emit("say", ("chat", repr(time.time())), namespace=NAMESPACE)
            time.sleep(interval)
        done.wait(30)
        for sio in (talker, listener):
            sio.disconnect()
        values = sorted(latencies)
        return (
            f"| chat | {settings['broker']} | {len(values)}/{messages} "
            f"| p50 {percentile(values, 0.5) * 1e3:.2f} ms "
            f"| p99 {percentile(values, 0.99) * 1e3:.2f} ms "
            f"| max {values[-1] * 1e3:.2f} ms "
            f"| mean {statistics.mean(values) * 1e3:.2f} ms |"
        )
    finally:
        for process in processes:
            stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emits", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    watchdog(600)
    uri = server_uri()
    create_database(uri)
    try:
        with tempfile.TemporaryDirectory(prefix="oe-bench-workers-") as directory:
            workdir = Path(directory)
            for broker, peer in (
                ("local", False),
                ("postgresql", False),
                ("postgresql", True),
            ):
                print(emit_cost(uri, workdir, args.emits, broker, peer), flush=True)
            brokers = [{"broker": "postgresql"}]
            if args.redis_url:
                brokers.append({"broker": "redis", "broker_url": args.redis_url})
            for settings in brokers:
                print(
                    chat_latency(uri, workdir, args.messages, args.interval, settings),
                    flush=True,
                )
    finally:
        with contextlib.suppress(Exception):
            drop_database(uri)


if __name__ == "__main__":
    main()
