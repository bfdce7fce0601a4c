"""Server CPU and round trip of one acknowledged event on an idle WebSocket.

One raw WebSocket client (this process, pinned to ``--client-cpu``) sends
the ``/bench`` protocol's ``join`` event and waits for its acknowledgement,
in a loop: between two events the socket is idle, so each one is what a
client's message to an idle connection costs (waking the reader, reading,
dispatching, answering). The server is the real command line
(``bench/harness_server.py``) pinned to ``--server-cpu``; it prints the
server's CPU per round trip and the round trip's p50 and p99::

    bin/python bench/idle_wake.py --tree 3fb7e72 --tree HEAD --reps 2

``--tree COMMIT`` serves the egg as that commit has it (several: run in
turn, each rep, each with a fresh server); none: the checkout.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, free_port, measure_variants, stop, watchdog
from poll_cost import start_server

JOIN = '42/bench,1["join",{"room":"r"}]'


class WebSocket:
    """A raw client: text frames out (masked), text frames in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
        self.receive()  # Engine.IO open

    def send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)

    def receive(self) -> str:
        while True:
            if len(self.buffer) >= 2:
                length, start = self.buffer[1] & 0x7F, 2
                if length == 126:
                    (length,), start = struct.unpack("!H", self.buffer[2:4]), 4
                if len(self.buffer) >= start + length:
                    text = self.buffer[start : start + length].decode()
                    self.buffer = self.buffer[start + length :]
                    return text
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed the connection")
            self.buffer += chunk


def measure(sources: Path | None, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    server = start_server(sources, port, args.server_cpu, [])
    client = None
    try:
        client = WebSocket(port)
        client.send("40/bench,")
        client.receive()
        for _ in range(args.warmup):
            client.send(JOIN)
            client.receive()
        cpu, rtts = cpu_seconds(server.pid), []
        for _ in range(args.rounds):
            started = time.perf_counter()
            client.send(JOIN)
            answer = client.receive()
            rtts.append(time.perf_counter() - started)
            if not answer.startswith("43/bench,1"):
                raise SystemExit(f"unexpected {answer!r}")
        cpu = cpu_seconds(server.pid) - cpu
    finally:
        if client is not None:
            client.sock.close()
        stop(server)
    rtts.sort()
    return {
        "us_per_round": cpu / args.rounds * 1e6,
        "p50_us": rtts[len(rtts) // 2] * 1e6,
        "p99_us": rtts[int(len(rtts) * 0.99)] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tree", action="append", default=[], metavar="COMMIT")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--deadline", type=float, default=600)
    args = parser.parse_args()
    watchdog(args.deadline)
    if args.client_cpu:
        os.sched_setaffinity(0, {int(args.client_cpu)})
    results = measure_variants(
        lambda sources: measure(sources, args),
        args.tree,
        args.reps,
        "idle-wake-",
    )
    print(
        "| egg | rounds | server µs per round trip (median of reps) | p50 µs | p99 µs |"
    )
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        cpu = statistics.median(r["us_per_round"] for r in runs)
        p50 = statistics.median(r["p50_us"] for r in runs)
        p99 = statistics.median(r["p99_us"] for r in runs)
        print(f"| {name} | {args.rounds} | {cpu:.0f} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
