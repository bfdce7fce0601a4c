"""Slow readers: the server's memory while clients stop reading their socket.

C clients (socket.io-client in a Node process, bench/channel_clients.mjs)
receive M messages of S bytes published to their
channel at R messages a second; P more clients, raw WebSockets in this
process, join the same channel and then never read again. The server
(oe_web_socketio with the bench namespace) runs with ``max_queued_bytes``
as given (``0``: no cap, as before the cap existed).

Printed: the server's RSS every ``--sample`` seconds and how many clients
``/health`` counts, then one row: peak and final RSS, when the paused
clients were let go, and the latency and losses of the clients that read.
The server is pinned to CPU 1, every client and the publisher to CPU 0.

Usage: bin/python bench/slow_reader.py --max-queued-bytes 0
       bin/python bench/slow_reader.py --max-queued-bytes 4194304 --paused 10
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    die_with_parent,
    disconnect_all,
    free_port,
    raise_nofile_limit,
    read_line,
    rss_bytes,
    start_target,
    stop,
    watchdog,
)
from fanout import CHANNEL, NAMESPACE, connect, publish_paced  # noqa: E402

SERVER_CPU = 1
CLIENT_CPU = 0
#: Receive buffer of a paused client, bytes.
PAUSED_RCVBUF = 65536


def masked_text_frame(text: str) -> bytes:
    """A WebSocket text frame as a client sends it (masked, < 126 bytes)."""
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def paused_client(port: int) -> socket.socket:
    """A raw WebSocket that joins the bench namespace and subscribes to the
    channel, then is never read again (its socket is returned open)."""
    sock = socket.socket()
    # As a client across a network would: loopback lets the kernel buffer
    # up to tcp_rmem's maximum (32 MiB here) for a client that does not
    # read, long before the server queues anything.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PAUSED_RCVBUF)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    if not answer.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"WebSocket refused: {answer[:80]!r}")
    sock.sendall(masked_text_frame(f"40{NAMESPACE},"))
    sock.sendall(masked_text_frame(f'42{NAMESPACE},["subscribe","{CHANNEL}"]'))
    return sock


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
        return json.load(answer)


def clients_counted(url: str) -> int:
    """``/health``'s client count, or -1 when the server does not answer
    in time (a sample is not worth ending the run)."""
    try:
        return int(health(url)["clients"])
    except OSError:
        return -1


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    config = Path(tempfile.mkdtemp()) / "slow_reader.cfg"
    config.write_text(
        "[oe_web_socketio]\n"
        f"max_queued_bytes = {args.max_queued_bytes}\n"
        f"max_event_size = {args.size * 2 + 1000}\n"
        "message_log_format =\n"
    )
    server = start_target("oe", port, extra=["-c", str(config)])
    os.sched_setaffinity(server.pid, {SERVER_CPU})
    return server


def start_worker(args: argparse.Namespace, url: str) -> subprocess.Popen:
    """The clients that read: Node, socket.io-client (a Python client
    spends more CPU per 10 KB message than the server does)."""
    command = [
        "node",
        str(Path(__file__).with_name("channel_clients.mjs")),
        "--url",
        url,
        "--clients",
        str(args.clients),
        "--messages",
        str(args.messages),
        "--deadline",
        str(args.messages / args.rate + args.drain),
    ]
    worker = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - no real threads
    )
    os.sched_setaffinity(worker.pid, {CLIENT_CPU})
    return worker


def run(args: argparse.Namespace) -> dict:
    os.sched_setaffinity(0, {CLIENT_CPU})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port)
    worker = None
    paused: list[socket.socket] = []
    samples: list[tuple[float, float, int]] = []
    try:
        worker = start_worker(args, url)
        if json.loads(read_line(worker, 120, "ready"))["type"] != "ready":
            raise SystemExit("the client process failed to start")
        paused = [paused_client(port) for _ in range(args.paused)]
        publisher = connect(url, "websocket")
        deadline = time.time() + 10
        while health(url)["clients"] < args.clients + args.paused + 1:
            if time.time() > deadline:
                raise SystemExit("the paused clients did not join")
            gevent.sleep(0.1)
        rss_before = rss_bytes(server.pid)
        started = time.time()

        def sample() -> None:
            while True:
                samples.append(
                    (
                        time.time() - started,
                        rss_bytes(server.pid) / 2**20,
                        clients_counted(url),
                    )
                )
                gevent.sleep(args.sample)

        sampler = gevent.spawn(sample)
        publish_paced(publisher, args.messages, args.rate, args.size, started)
        result = json.loads(read_line(worker, args.drain + 180, "result"))
        sampler.kill()
        samples.append(
            (
                time.time() - started,
                rss_bytes(server.pid) / 2**20,
                clients_counted(url),
            )
        )
        disconnect_all([publisher])
        worker.wait(60)
    finally:
        for sock in paused:
            sock.close()
        if worker is not None and worker.poll() is None:
            worker.kill()
        stop(server)

    readers = args.clients + 1  # and the publisher
    let_go = next((t for t, _, n in samples if 0 <= n <= readers), None)
    return {
        "max_queued_bytes": args.max_queued_bytes,
        "paused": args.paused,
        "clients": args.clients,
        "rate": args.rate,
        "size": args.size,
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_peak_mib": round(max(rss for _, rss, _ in samples), 1),
        "rss_end_mib": round(samples[-1][1], 1),
        "paused_let_go_s": None if let_go is None else round(let_go),
        "p50_ms": result["latencies_ms"]["p50"],
        "p99_ms": result["latencies_ms"]["p99"],
        "lost": result["missing"],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-queued-bytes", type=int, default=4 * 2**20)
    parser.add_argument("--paused", type=int, default=1, help="clients that never read")
    parser.add_argument("--clients", type=int, default=100, help="clients that read")
    parser.add_argument("--messages", type=int, default=1200)
    parser.add_argument("--rate", type=float, default=20, help="messages/s")
    parser.add_argument("--size", type=int, default=10_000, help="payload bytes")
    parser.add_argument("--drain", type=float, default=30, help="seconds")
    parser.add_argument("--sample", type=float, default=5, help="seconds")
    args = parser.parse_args()
    raise_nofile_limit()
    watchdog(300 + args.messages / args.rate + args.drain)
    row = run(args)
    print("| t s | server RSS MiB | clients |")
    print("|---|---|---|")
    for t, rss, clients in row.pop("samples"):
        print(f"| {t:.0f} | {rss:.1f} | {clients} |")
    print()
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(str(value) for value in row.values()) + " |")


if __name__ == "__main__":
    main()
