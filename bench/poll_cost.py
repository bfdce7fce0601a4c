"""Server CPU per long-polling request, on one keep-alive connection.

Every polling delivery is an HTTP response to a held ``GET`` and a new
``GET``; what the server spends on one request (HTTP parsing, the WSGI
handler, python-engineio's polling path, the answer) is most of its cost
per delivery at 1,000 polling clients. This measures it alone, without the
batching that makes the shared harness's figures move with the load: the
real command line (``bench/harness_server.py``, the ``/bench`` protocol)
pinned to ``--server-cpu``, and one raw HTTP/1.1 client in this process
pinned to ``--client-cpu``, which in a loop ``POST``\\ s a ``publish`` event
(the server sends the message to the room, the client alone, and
acknowledges) and ``GET``\\ s until both are back. It prints the server's
CPU time per request and per round (one delivery)::

    bin/python bench/poll_cost.py --rounds 5000 --reps 3
    bin/python bench/poll_cost.py --tree a6d3c7b~1 --tree HEAD --reps 3
    bin/python bench/poll_cost.py --headers browser   # a browser's 14 headers
    bin/python bench/poll_cost.py --server-arg=--log-level=info  # access log on

``--tree COMMIT`` serves the egg as that commit has it and ``--sources DIR``
the egg in DIR (``git archive``, as ``fuzz.py --tree``); several are run in
turn, each rep, each with a fresh server. The client's requests are those
of socket.io-client in Node (3 headers) or of Chromium (``--headers
browser``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    cpu_seconds,
    die_with_parent,
    free_port,
    measure_variants,
    stop,
    wait_accepting,
    watchdog,
)

#: Request headers after the request line (``{host}`` filled in).
HEADERS = {
    "node": "Host: {host}\r\nAccept: */*\r\nConnection: keep-alive\r\n",
    "browser": (
        "Host: {host}\r\nConnection: keep-alive\r\n"
        'sec-ch-ua: "Chromium";v="130"\r\nsec-ch-ua-mobile: ?0\r\n'
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36\r\n"
        'sec-ch-ua-platform: "Linux"\r\nAccept: */*\r\n'
        "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\n"
        "Sec-Fetch-Dest: empty\r\nReferer: http://{host}/\r\n"
        "Accept-Encoding: gzip, deflate, br, zstd\r\n"
        "Accept-Language: en-US,en;q=0.9\r\nCookie: session=abcdef0123456789\r\n"
    ),
}


class PollingClient:
    """One Engine.IO polling session over one keep-alive connection."""

    def __init__(self, port: int, headers: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.headers = headers.format(host=f"127.0.0.1:{port}")
        self.buffer = b""
        self.sid = ""
        self.requests = 0

    def request(self, method: str, body: str = "") -> str:
        query = "EIO=4&transport=polling&t=PXa1b2c" + (
            f"&sid={self.sid}" if self.sid else ""
        )
        head = f"{method} /socket.io/?{query} HTTP/1.1\r\n{self.headers}"
        if method == "POST":
            head += (
                "Content-Type: text/plain;charset=UTF-8\r\n"
                f"Content-Length: {len(body.encode())}\r\n"
            )
        self.sock.sendall((head + "\r\n" + body).encode())
        self.requests += 1
        return self._response()

    def _response(self) -> str:
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status:
            raise SystemExit(f"unexpected answer: {status!r}")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body.decode()

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        self.buffer += chunk

    def poll_until(self, wanted: str) -> list[str]:
        """``GET`` until a packet starting with *wanted* came; answer
        pings on the way."""
        packets: list[str] = []
        while not any(p.startswith(wanted) for p in packets):
            for packet in self.request("GET").split("\x1e"):
                if packet == "2":
                    self.request("POST", "3")
                else:
                    packets.append(packet)
        return packets

    def open(self) -> None:
        handshake = self.request("GET")
        self.sid = json.loads(handshake[1:])["sid"]
        self.request("POST", "40/bench,")
        self.poll_until("40/bench,")
        self.request("POST", '42/bench,1["join",{"room":"r"}]')
        self.poll_until("43/bench,1")

    def publish(self, ack: int, payload: str) -> None:
        event = json.dumps(["publish", {"room": "r", "payload": payload}])
        self.request("POST", f"42/bench,{ack}{event}")
        packets = self.poll_until(f"43/bench,{ack}")
        while not any(p.startswith("42/bench,") for p in packets):
            packets += self.poll_until("42/bench,")


def start_server(
    sources: Path | None, port: int, cpu: str, server_args: list[str]
) -> subprocess.Popen:
    path = [str(ROOT), *sys.path]
    if sources is not None:
        path.insert(0, str(sources))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    process = subprocess.Popen(
        [
            *(["taskset", "-c", cpu] if cpu else []),
            sys.executable,
            str(ROOT / "bench" / "harness_server.py"),
            "--port",
            str(port),
            *server_args,
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads
    )
    wait_accepting(process, port, 30, "server")
    return process


def measure(sources: Path | None, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    server = start_server(sources, port, args.server_cpu, args.server_arg)
    client = None
    try:
        client = PollingClient(port, HEADERS[args.headers])
        client.open()
        payload = "x" * args.payload_bytes
        for ack in range(2, 2 + args.warmup):
            client.publish(ack, payload)
        requests, cpu = client.requests, cpu_seconds(server.pid)
        started = time.monotonic()
        for ack in range(10_000, 10_000 + args.rounds):
            client.publish(ack, payload)
        cpu = cpu_seconds(server.pid) - cpu
        elapsed = time.monotonic() - started
        requests = client.requests - requests
    finally:
        if client is not None:
            client.sock.close()
        stop(server)
    return {
        "requests": requests,
        "us_per_request": cpu / requests * 1e6,
        "us_per_round": cpu / args.rounds * 1e6,
        "server_core": cpu / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--headers", choices=sorted(HEADERS), default="node")
    parser.add_argument("--tree", action="append", default=[], metavar="COMMIT")
    parser.add_argument("--sources", action="append", default=[], type=Path)
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an argument of the server's command line, e.g. --server-arg=-v",
    )
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
        "poll-cost-",
        args.sources,
    )
    print(
        "| egg | headers | rounds | requests per round "
        "| server µs per request (median, min–max) | server µs per round |"
    )
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        per_request = sorted(r["us_per_request"] for r in runs)
        per_round = statistics.median(r["us_per_round"] for r in runs)
        ratio = statistics.median(r["requests"] for r in runs) / args.rounds
        print(
            f"| {name} | {args.headers} | {args.rounds} | {ratio:.2f} "
            f"| {statistics.median(per_request):.1f} ({per_request[0]:.1f}–"
            f"{per_request[-1]:.1f}) | {per_round:.1f} |"
        )


if __name__ == "__main__":
    main()
