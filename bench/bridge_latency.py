"""Database bridge latency: from COMMIT to delivery, with S subscribers.

One oe_web_socketio process (the appliance's ``bin/oe_web_socketio`` on a
free loopback port) serves a database of its own, ``oe_bench_bridge``,
created on the appliance's PostgreSQL (``[database] uri`` of
etc/trytond.conf) and dropped at the end, with the outbox tables
(:func:`oe_web_socketio.outbox.ensure_schema`, what the Tryton module does
when it is activated); nothing else of Tryton is needed. S Socket.IO clients (the
official Node socket.io-client, WebSocket, in ``--workers`` processes of
``bench/bridge_clients.mjs``) subscribe to one channel with
``resume(null, [channel])``. This process then publishes M messages
through :func:`oe_web_socketio.outbox.publish`, one transaction each:

* ``spaced``: one every ``--interval`` seconds, so that latency measures
  the path, not a queue the benchmark built up;
* ``burst``: ``--burst`` more, back to back, once every client has the
  spaced ones (0: none): a backlog, whose figure is deliveries per second.

The default spacing, 100 ms, is one the server keeps up with on a 2-core
machine that also runs the clients: one message fanned out to 1,000
WebSocket clients costs the server 20 to 50 ms of CPU (python-engineio's
per-socket writer, mostly), so at 20 ms the server and the clients share
two saturated cores and the latencies are those of the backlog (seconds).

Latency is the time from the moment ``COMMIT`` returned to the publisher
to the moment a client's ``message`` handler runs, for every (message,
client) pair: one machine, one wall clock (Python's ``time.time()``,
Node's ``performance.timeOrigin + performance.now()``). Figures: p50,
p99, max; deliveries against expected, and how many clients received
every message exactly once, in publication order, with increasing
positions; the server's CPU time per phase (from /proc), per delivery and
per message published (a notification), and its RSS; the
busiest client process's CPU use (near 100 %, the clients, not the
server, set the latency). The commit itself (``commit ms``, the median)
is not part of the latency.

``--servers N`` runs N servers on the database (real-time workers
``w0``, ``w1``…, as the appliance's), each client process connected to one
of them in turn: every server reads every message from the database and
delivers it to its own clients, so the figures are those of the workers
together (CPU and RSS summed; deliveries per second of all clients).

Exits with status 1 if any message is missing, duplicated or out of order.

``--tree COMMIT`` runs the egg as that commit has it (server and outbox
schema, exported with ``git archive``), for before/after figures in one
sitting.

Usage: bin/python bench/bridge_latency.py [--subscribers 1000]
           [--messages 200] [--interval 0.1] [--burst 200] [--workers 2]
           [--servers 1] [--tree COMMIT]
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import importlib.util
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from oe_web_socketio import outbox
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    cpu_seconds,
    die_with_parent,
    egg_launcher,
    free_port,
    percentile,
    raise_nofile_limit,
    rss_bytes,
    stop,
    watchdog,
)

#: The database the benchmark creates, uses and drops.
DATABASE = "oe_bench_bridge"
#: The channel every client subscribes to.
CHANNEL = "bench"
#: Seconds the server has to start listening, the clients to subscribe.
STARTUP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 60.0
#: Seconds a client process has to answer a command.
ANSWER_TIMEOUT = 30.0
#: Seconds between two questions to the clients while waiting for them.
POLL_INTERVAL = 0.1
#: Seconds waited after the last phase, for what should not come (a
#: duplicate) to come before the clients report.
SETTLE = 1.0
CLIENTS_SCRIPT = Path(__file__).resolve().parent / "bridge_clients.mjs"


# --- the database


def server_uri() -> str:
    """The ``[database] uri`` of the appliance's trytond.conf, or
    ``$OE_BENCH_URI`` (a libpq URI without a database name) if set."""
    if os.environ.get("OE_BENCH_URI"):
        return os.environ["OE_BENCH_URI"]
    parser = configparser.ConfigParser(interpolation=None)
    path = ROOT / "etc" / "trytond.conf"
    if not path.exists():
        raise SystemExit(f"{path} is missing: build the appliance first")
    parser.read(path, encoding="utf-8")
    return parser["database"]["uri"]


def drop_database(uri: str) -> None:
    with psycopg.connect(uri, dbname="postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(DATABASE)
            )
        )


def create_database(uri: str, schema: ModuleType = outbox) -> None:
    """Create :data:`DATABASE` with the outbox of *schema* (the module
    :mod:`oe_web_socketio.outbox` of the egg that runs)."""
    drop_database(uri)
    with psycopg.connect(uri, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with (
        psycopg.connect(uri, dbname=DATABASE, autocommit=True) as conn,
        conn.transaction(),
    ):
        schema.ensure_schema(conn.cursor())


# --- the egg of another commit


def tree_outbox(sources: Path) -> ModuleType:
    """The outbox module of the egg in *sources* (it imports nothing of
    the egg, so it loads from its file)."""
    spec = importlib.util.spec_from_file_location(
        "tree_outbox", sources / "oe_web_socketio" / "outbox.py"
    )
    assert spec is not None and spec.loader is not None
    schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema)
    return schema


# --- the server


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return json.load(response)


def start_server(
    uri: str,
    workdir: Path,
    port: int,
    program: Path = ROOT / "bin" / "oe_web_socketio",
    worker: str | None = None,
    *,
    database: str = DATABASE,
    settings: dict[str, str] | None = None,
    namespace: str = "/=bridge_namespaces:OpenNamespace",
) -> subprocess.Popen:
    """*program* (``bin/oe_web_socketio``) serving *database* to
    anonymous subscribers (*namespace*, by default
    tests/bridge_namespaces.py), as the real-time worker *worker* if
    given, with more *settings*; return once it listens. Its log is
    ``server-<port>.log`` in *workdir*."""
    if not program.exists():
        raise SystemExit(f"{program} is missing: build the appliance first")
    trytond_conf = workdir / "trytond.conf"
    trytond_conf.write_text(f"[database]\nuri = {uri}\n")
    config = workdir / f"oe_web_socketio-{port}.conf"
    config.write_text(
        f"[oe_web_socketio]\ndatabases = {database}\ntrytond_config = {trytond_conf}\n"
        + "".join(f"{key} = {value}\n" for key, value in (settings or {}).items())
    )
    server_log = workdir / f"server-{port}.log"
    log = server_log.open("w")
    process = subprocess.Popen(
        [
            str(program),
            "-c",
            str(config),
            "--no-entry-points",
            "-n",
            namespace,
            "-d",
            database,
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "--log-level",
            "warning",
            *(("--worker", worker) if worker else ()),
        ],
        env=dict(
            os.environ,
            # The caller's PYTHONPATH after ours (a package to try, such as
            # psycopg-binary installed with pip --target).
            PYTHONPATH=os.pathsep.join(
                filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
            ),
            TRYTOND_CONFIG=str(trytond_conf),
        ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads yet
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("oe_web_socketio exited:\n" + server_log.read_text())
        try:
            listener = health(url)["listeners"][database]
            if listener["state"] == "listening":
                return process
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    stop(process)
    raise SystemExit(
        "oe_web_socketio did not listen in time:\n" + server_log.read_text()[-3000:]
    )


# --- the client processes


class Clients:
    """A process of ``bridge_clients.mjs``, spoken to in JSON lines."""

    def __init__(self, url: str, count: int, messages: int, lifetime: float) -> None:
        node = shutil.which("node")
        if node is None:
            raise SystemExit("node is not on PATH")
        self.process = subprocess.Popen(
            [
                node,
                str(CLIENTS_SCRIPT),
                "--url",
                url,
                "--clients",
                str(count),
                "--channel",
                CHANNEL,
                "--messages",
                str(messages),
                "--lifetime",
                str(round(lifetime)),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - readers start after
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def receive(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next line, which must be of type *kind*."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(
                f"a client process sent no {kind} in {timeout:g} s"
            ) from None
        if line is None:
            raise SystemExit(
                f"a client process ended (status {self.process.wait(10)}) "
                f"instead of sending {kind}"
            )
        answer = json.loads(line)
        if answer.get("type") != kind:
            raise SystemExit(f"a client process sent {line[:200]!r}, not {kind}")
        return answer

    def send(self, command: dict[str, Any]) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_delivered(workers: list[Clients], count: int, timeout: float) -> bool:
    """Wait until every client has *count* messages; return whether all
    do within *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            worker.send({"op": "count"})
        fewest = min(
            worker.receive("count", ANSWER_TIMEOUT)["min"] for worker in workers
        )
        if fewest >= count:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)


# --- publishing


def publish(
    conn: psycopg.Connection, first: int, count: int, interval: float, size: int
) -> tuple[list[float], list[float]]:
    """Publish messages ``first`` to ``first + count - 1``, one transaction
    each, *interval* seconds apart; return the wall time each COMMIT
    returned, and how long each took."""
    commits: list[float] = []
    durations: list[float] = []
    data = "x" * size
    started = time.monotonic()
    for number in range(count):
        with conn.cursor() as cursor:
            outbox.publish(cursor, {"seq": first + number, "data": data}, CHANNEL)
        before = time.time()
        conn.commit()
        commits.append(time.time())
        durations.append(commits[-1] - before)
        if interval:
            time.sleep(max(0.0, started + (number + 1) * interval - time.monotonic()))
    return commits, durations


# --- the benchmark


@dataclasses.dataclass
class Phase:
    """What was published in one phase, and what it cost."""

    name: str
    first: int
    count: int
    interval: float
    #: The real-time workers that served the clients.
    servers: int = 1
    #: The wall time each COMMIT returned, and how long each took.
    commits: list[float] = dataclasses.field(default_factory=list)
    durations: list[float] = dataclasses.field(default_factory=list)
    server_cpu: float = 0.0
    #: The CPU time of the busiest client process.
    client_cpu: float = 0.0
    #: Seconds from the first publish until every client had every
    #: message (or the drain ended), as polled.
    wall: float = 0.0

    def row(self, subscribers: int, latencies_us: list[list[int]]) -> dict[str, Any]:
        """The figures of the phase; *latencies_us*: those of each of its
        messages, at each client that received it."""
        values = sorted(us / 1000 for per_message in latencies_us for us in per_message)
        delivered = len(values)
        # From the moment the first COMMIT was sent to the last arrival.
        last = max(
            (
                commit + max(per_message) / 1e6
                for commit, per_message in zip(self.commits, latencies_us, strict=True)
                if per_message
            ),
            default=self.commits[0],
        )
        span = last - (self.commits[0] - self.durations[0])
        return {
            "phase": self.name,
            "servers": self.servers,
            "subscribers": subscribers,
            "messages": self.count,
            "spacing ms": round(self.interval * 1000, 1),
            "delivered": f"{delivered}/{subscribers * self.count}",
            "p50 ms": round(percentile(values, 0.50), 1),
            "p99 ms": round(percentile(values, 0.99), 1),
            "max ms": round(values[-1] if values else float("nan"), 1),
            "deliveries/s": round(delivered / max(span, 1e-9)),
            "commit ms": round(statistics.median(self.durations) * 1000, 2),
            "server CPU s": round(self.server_cpu, 2),
            "server µs/delivery": round(self.server_cpu / max(delivered, 1) * 1e6, 1),
            "server ms/message": round(self.server_cpu / self.count * 1e3, 2),
            "server CPU %": round(self.server_cpu / max(self.wall, 1e-9) * 100),
            "busiest client CPU %": round(self.client_cpu / max(self.wall, 1e-9) * 100),
        }


def run(args: argparse.Namespace, lifetime: float) -> int:
    load = os.getloadavg()
    uri = server_uri()
    total = args.messages + args.burst
    workdir = Path(tempfile.mkdtemp(prefix="bridge_latency."))
    program, sources = egg_launcher(args.tree, workdir)
    create_database(uri, tree_outbox(sources) if args.tree else outbox)
    servers: list[subprocess.Popen] = []
    workers: list[Clients] = []
    publisher: psycopg.Connection | None = None
    try:
        urls = []
        for index in range(args.servers):
            port = free_port()
            directory = workdir / f"w{index}"
            directory.mkdir()
            name = f"w{index}" if args.servers > 1 else None
            servers.append(start_server(uri, directory, port, program, name))
            urls.append(f"http://127.0.0.1:{port}")
        rss_idle = sum(rss_bytes(server.pid) for server in servers)
        sizes = [args.subscribers // args.workers] * args.workers
        for index in range(args.subscribers % args.workers):
            sizes[index] += 1
        connecting = time.monotonic()
        # Each client process to one server, in turn.
        workers = [
            Clients(urls[index % len(urls)], size, total, lifetime)
            for index, size in enumerate(sizes)
            if size
        ]
        for worker in workers:
            worker.receive("ready", CONNECT_TIMEOUT)
        clients = sum(health(url)["clients"] for url in urls)
        print(
            f"# {clients} clients connected and subscribed in "
            f"{time.monotonic() - connecting:.1f} s",
            flush=True,
        )
        time.sleep(1)  # let the handshakes' last writes settle
        rss_clients = sum(rss_bytes(server.pid) for server in servers)
        publisher = psycopg.connect(
            uri, dbname=DATABASE, application_name="bridge_latency publisher"
        )

        phases = [Phase("spaced", 0, args.messages, args.interval, args.servers)]
        if args.burst:
            phases.append(Phase("burst", args.messages, args.burst, 0.0, args.servers))
        commits: list[float] = []
        done: list[Phase] = []
        complete = True
        for phase in phases:
            cpu_before = sum(cpu_seconds(server.pid) for server in servers)
            clients_before = [cpu_seconds(worker.pid) for worker in workers]
            started = time.monotonic()
            phase.commits, phase.durations = publish(
                publisher, phase.first, phase.count, phase.interval, args.size
            )
            commits.extend(phase.commits)
            if not wait_delivered(workers, phase.first + phase.count, args.drain):
                print(
                    f"# {phase.name}: not every client had every message after "
                    f"--drain {args.drain:g} s (a long burst needs more)",
                    flush=True,
                )
                complete = False
            phase.wall = time.monotonic() - started
            phase.server_cpu = (
                sum(cpu_seconds(server.pid) for server in servers) - cpu_before
            )
            phase.client_cpu = max(
                cpu_seconds(worker.pid) - before
                for worker, before in zip(workers, clients_before, strict=True)
            )
            done.append(phase)
            if not complete:
                break
        time.sleep(SETTLE)
        rss_end = sum(rss_bytes(server.pid) for server in servers)
        reports = []
        commits_ms = [t * 1000 for t in commits]
        for worker in workers:
            worker.send({"op": "report", "commits": commits_ms})
        for worker in workers:
            reports.append(worker.receive("report", ANSWER_TIMEOUT))
    finally:
        if publisher is not None:
            publisher.close()
        for worker in workers:
            worker.close()
        for server in servers:
            stop(server)
        drop_database(uri)

    latencies: list[list[int]] = [[] for _ in commits]
    for report in reports:
        for seq, values in enumerate(report["latencies_us"]):
            latencies[seq].extend(values)
    rows = [
        phase.row(args.subscribers, latencies[phase.first : phase.first + phase.count])
        for phase in done
    ]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")

    exact = sum(report["exact"] for report in reports)
    missing = sum(report["missing"] for report in reports)
    duplicates = sum(report["duplicates"] for report in reports)
    foreign = sum(report["foreign"] for report in reports)
    disconnected = sum(report["disconnected"] for report in reports)
    print()
    print(f"load average at the start (other processes of this machine): {load[0]:.2f}")
    print(
        f"clients connected: {clients} of {args.subscribers}, in "
        f"{len(workers)} process(es); disconnected during the run: {disconnected}"
    )
    print(
        f"exactly once, in order, positions increasing: {exact} of "
        f"{args.subscribers} clients; (message, client) pairs not received "
        f"(by the end of the drain) {missing}, duplicated {duplicates}, "
        f"unexpected {foreign}"
    )
    mib = 1024 * 1024
    print(
        f"server RSS ({args.servers} together): {rss_idle / mib:.1f} MiB listening, "
        f"{rss_clients / mib:.1f} MiB with the clients, {rss_end / mib:.1f} MiB "
        "after the messages"
    )
    ok = (
        complete
        and exact == args.subscribers
        and not (missing or duplicates or foreign)
    )
    print("check:", "passed" if ok else "FAILED", flush=True)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"# the servers' logs: {workdir}/w*/server-*.log")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200, help="spaced ones")
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between spaced ones"
    )
    parser.add_argument(
        "--burst", type=int, default=200, help="messages back to back (0: none)"
    )
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument(
        "--workers", type=int, default=2, help="client processes (default 2)"
    )
    parser.add_argument(
        "--servers",
        type=int,
        default=1,
        help="real-time workers on the database, the client processes spread "
        "over them (default 1)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=20,
        help="seconds every client has, after a phase, to get its messages",
    )
    parser.add_argument(
        "--tree", metavar="COMMIT", help="run the egg of this commit (default: ours)"
    )
    args = parser.parse_args()
    for name in ("subscribers", "workers", "servers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.messages < 1 or args.burst < 0 or args.interval < 0 or args.size < 0:
        parser.error("--messages must be positive, --burst, --interval, --size not")
    raise_nofile_limit()
    # Database, server and clients, the messages, the drains, and a margin.
    lifetime = 30 + CONNECT_TIMEOUT + args.messages * args.interval + 2 * args.drain
    watchdog(lifetime)
    sys.exit(run(args, lifetime))


if __name__ == "__main__":
    main()
