"""Memory per idle connection: the server's RSS growth for N idle sockets.

Opens N Socket.IO connections (WebSocket, namespace /bench) that then stay
idle, and reports (RSS with N connections - RSS before) / N. The server is
warmed up first with a few connections opened and closed, so that imports
and first-use caches are not charged to the connections.

Usage: bin/python bench/idle_memory.py --target oe --connections 2000

``--tree COMMIT`` serves the egg as that commit has it.

With ``--breakdown`` the server runs under ``bench/memory_probe.py``, and a
second table splits the growth per connection: Python objects (pymalloc),
the C heap (malloc: buffers, the C stacks greenlets save), and the rest of
the resident memory, which is mostly the greenlets' Python data stacks;
then the greenlets per connection, by kind, with the resident pages of
their data stacks. ``--tracemalloc N`` also lists the N source lines that
allocated most per connection (the server runs slower and bigger). The
probe allocates too: publish the first table of runs without them.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import socketio  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    disconnect_all,
    export_egg,
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


class Probe:
    """The reports of a server run under bench/memory_probe.py."""

    def __init__(self, tracemalloc: bool, owners: bool = False) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="idle_memory."))
        self.wrapper = [str(ROOT / "bench" / "memory_probe.py")]
        self.env = {
            "MEMORY_PROBE_DIR": str(self.directory),
            "MEMORY_PROBE_TRACEMALLOC": "1" if tracemalloc else "0",
            "MEMORY_PROBE_OWNERS": "1" if owners else "0",
        }
        self.count = 0

    def take(self, server: subprocess.Popen) -> dict:
        """Ask *server* for a report; return it."""
        self.count += 1
        server.send_signal(signal.SIGUSR1)
        done = self.directory / f"{self.count}.done"
        with gevent.Timeout(120, False):
            while not done.exists():
                gevent.sleep(0.1)
        if not done.exists():
            raise SystemExit("the memory probe sent no report in 120 s")
        return json.loads((self.directory / f"{self.count}.json").read_text())

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def print_breakdown(before: dict, after: dict, connections: int) -> None:
    def per_connection(key: str) -> float:
        return (after.get(key, 0) - before.get(key, 0)) / connections / 1024

    other = (
        per_connection("rss")
        - per_connection("pymalloc_arenas")
        - per_connection("malloc_arena")
    )
    print()
    # Under tracemalloc, CPython reports nothing of pymalloc.
    pymalloc = (
        f"{per_connection('pymalloc_blocks'):.1f}"
        f" ({per_connection('pymalloc_arenas'):.1f})"
        if after.get("pymalloc_arenas")
        else "? (tracemalloc)"
    )
    print(
        "| KiB per connection | resident | pymalloc blocks (arenas) |"
        " malloc in use (heap) | rest: data stacks, ... |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| | {per_connection('rss'):.1f} | {pymalloc}"
        f" | {per_connection('malloc_used'):.1f}"
        f" ({per_connection('malloc_arena'):.1f}) | {other:.1f} |"
    )
    print()
    print(
        "| greenlet (bottom of its stack) | per connection | data stack pages"
        " | C stack saved (KiB) |"
    )
    print("|---|---|---|---|")
    kinds = after["greenlets"]
    for name, stats in sorted(kinds.items()):
        added = stats["count"] - before["greenlets"].get(name, {}).get("count", 0)
        if added >= connections / 2:
            pages = stats["stack_pages"]
            shown = f"{pages:.2f}" if pages >= 0 else "?"
            saved = stats.get("c_stack_saved", 0) / 1024
            print(f"| {name} | {added / connections:.2f} | {shown} | {saved:.1f} |")


def print_objects(before: dict, after: dict, connections: int, lines: int) -> None:
    """The types of objects that grew most with the connections."""
    grown = []
    for name, (count, size) in after.get("objects", {}).items():
        count_before, size_before = before.get("objects", {}).get(name, (0, 0))
        grown.append((size - size_before, count - count_before, name))
    print()
    print("| bytes per connection | objects per connection | type |")
    print("|---|---|---|")
    for size, count, name in sorted(grown, reverse=True)[:lines]:
        print(f"| {size / connections:.0f} | {count / connections:.2f} | {name} |")


def print_owners(after: dict, connections: int, lines: int) -> None:
    """Where the containers that came with the connections are held."""
    places = sorted(
        ((size, count, place) for place, (count, size) in after["owners"].items()),
        reverse=True,
    )
    print()
    print("| bytes per connection | per connection | held in |")
    print("|---|---|---|")
    for size, count, place in places[:lines]:
        print(f"| {size / connections:.0f} | {count / connections:.2f} | {place} |")


def print_tracemalloc(probe: Probe, connections: int, lines: int) -> None:
    import tracemalloc

    first = tracemalloc.Snapshot.load(str(probe.directory / "1.tracemalloc"))
    second = tracemalloc.Snapshot.load(str(probe.directory / "2.tracemalloc"))
    print()
    print("| bytes per connection | blocks | allocated at |")
    print("|---|---|---|")
    for stat in second.compare_to(first, "lineno")[:lines]:
        frame = stat.traceback[0]
        where = f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}"
        print(
            f"| {stat.size_diff / connections:.0f}"
            f" | {stat.count_diff / connections:.1f} | {where} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("plain", "oe"), default="oe")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="split the growth by allocator and greenlet (bench/memory_probe.py)",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="also the N source lines allocating most (implies --breakdown)",
    )
    parser.add_argument(
        "--objects",
        type=int,
        default=15,
        metavar="N",
        help="with --breakdown, the N types of objects that grew most",
    )
    parser.add_argument(
        "--owners",
        action="store_true",
        help="also where the new dicts, lists, tuples, sets and deques are held"
        " (slow: a few hundred connections; implies --breakdown)",
    )
    parser.add_argument("--tree", metavar="COMMIT", help="serve the egg of COMMIT")
    args = parser.parse_args()
    # A client holds one descriptor, the server one (two before its own
    # WebSocket transport); the server inherits this limit.
    limit = raise_nofile_limit()
    if args.connections + 100 > limit:
        raise SystemExit(f"{args.connections} connections need more than {limit} fds")
    watchdog(120 + args.connections / 20)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    breakdown = args.breakdown or args.tracemalloc > 0 or args.owners
    probe = Probe(args.tracemalloc > 0, args.owners) if breakdown else None
    sources = exported = None
    if args.tree:
        exported = Path(tempfile.mkdtemp(prefix="idle_memory."))
        sources = export_egg(args.tree, exported)
    if probe is None:
        server = start_target(args.target, port, sources=sources)
    else:
        server = start_target(
            args.target, port, probe.wrapper, probe.env, sources=sources
        )
    try:
        # Warm-up connections stay open: after a WebSocket, plain gevent
        # reads the connection's next bytes as HTTP, and simple-websocket's
        # reader of a closed connection may then never end (a leak that
        # would be charged to the measured connections).
        warm = open_clients(url, 20)
        settle()
        before = rss_bytes(server.pid)
        probed = [probe.take(server)] if probe is not None else []
        started = time.time()
        clients = open_clients(url, args.connections)
        opened = time.time() - started
        settle()
        after = rss_bytes(server.pid)
        if probe is not None:
            probed.append(probe.take(server))
        left = disconnect_all([*warm, *clients])
        if left:
            print(f"# {left} client(s) still disconnecting after 30 s", file=sys.stderr)
    finally:
        stop(server)
        if exported is not None:
            shutil.rmtree(exported, ignore_errors=True)
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
    if probe is not None:
        try:
            print_breakdown(*probed, args.connections)
            print_objects(*probed, args.connections, args.objects)
            if args.owners:
                print_owners(probed[1], args.connections, args.objects)
            if args.tracemalloc:
                print_tracemalloc(probe, args.connections, args.tracemalloc)
        finally:
            probe.close()


if __name__ == "__main__":
    main()
