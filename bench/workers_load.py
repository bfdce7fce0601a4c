"""Several workers under the shared harness's Node load generator: fan-out
deliveries per second, and a crowd of idle WebSockets, N workers against one.

Workers are the appliance's ``bin/oe_web_socketio`` on free loopback
ports (``w0``, ``w1``…, ``broker = postgresql``), serving the harness's
``/bench`` protocol (:class:`bench.namespaces.Harness`: ``publish`` is
``send_and_broadcast_channel``, which crosses workers through the broker)
on the bench database of ``bench/bridge_latency.py`` (created on the
appliance's PostgreSQL, dropped at the end). The generator is the shared
harness's ``rawgen.js`` (``/tmp/sbench/bench``; run this under ``flock
/tmp/sbench/lock``), pinned to ``--gen-cpu``:

* ``fanout``: one ``rawgen.js`` whose WebSockets are spread over the
  workers in turn by ``bench/split_ports.cjs`` (client 0, the publisher,
  on ``w0``): *--messages* publishes of 100 bytes to the room of all
  *--clients*, window 10. Deliveries per second and latency are the
  generator's (one clock); the CPU of each worker, of PostgreSQL's
  backends, of the generator and of the host over the publish phase come
  from /proc. Workers are not pinned (``--server-cpus`` pins them all).
* ``crowd``: *--clients* idle WebSockets on each worker, one ``rawgen.js``
  process per worker (each process, the generator's included, may open
  20,000 files); the generators of ``w1``… connect first and publish
  nothing, then the one of ``w0`` connects, waits, and publishes one
  message to the room, which reaches the others' clients through the
  broker (counted as their ``unexpected`` messages). It prints the
  clients each worker holds, its RSS before and idle, and the broadcast.

Usage: flock /tmp/sbench/lock bin/python bench/workers_load.py fanout
           --servers 2 [--clients 1000] [--messages 500]
       flock /tmp/sbench/lock bin/python bench/workers_load.py crowd
           --servers 2 [--clients 19000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_latency import (
    DATABASE,
    create_database,
    drop_database,
    health,
    server_uri,
    start_server,
)
from common import (
    ROOT,
    die_with_parent,
    free_port,
    raise_nofile_limit,
    rss_bytes,
    watchdog,
)
from common import stop as stop_process
from crowd import harness_directory
from workers import wait_peers

SPLIT = Path(__file__).resolve().parent / "split_ports.cjs"
SERVED = "/bench=bench.namespaces:Harness"
MIB = 1024 * 1024


def start_workers(
    uri: str, workdir: Path, count: int, cpus: str | None
) -> list[tuple[subprocess.Popen, int]]:
    """*count* workers on the bench database; return each with its port."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    workers = []
    for index in range(count):
        directory = workdir / f"w{index}"
        directory.mkdir()
        port = free_port()
        process = start_server(
            uri,
            directory,
            port,
            worker=f"w{index}",
            settings={"broker": "postgresql", "message_log_format": ""},
            namespace=SERVED,
        )
        if cpus:
            os.sched_setaffinity(process.pid, {int(cpu) for cpu in cpus.split(",")})
        workers.append((process, port))
    if count > 1:
        for _, port in workers:
            wait_peers(f"http://127.0.0.1:{port}")
    return workers


def postmaster(uri: str) -> int:
    """The pid of the PostgreSQL server the bench database is on."""
    with psycopg.connect(uri, dbname=DATABASE) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        # Read while the backend lives: it exits with the connection.
        stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1])


def rawgen(
    harness: Path, gen_cpu: str, url: str, clients: int, messages: int, **options: str
) -> list[str]:
    command = ["taskset", "-c", gen_cpu, "node"]
    if "preload" in options:
        command += ["-r", options.pop("preload")]
    command += [str(harness / "rawgen.js"), "--url", url, "--clients", str(clients)]
    command += ["--messages", str(messages)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", value]
    return command


def last_record(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def fanout(args: argparse.Namespace, uri: str, workdir: Path, harness: Path) -> None:
    workers = start_workers(uri, workdir, args.servers, args.server_cpus)
    env = dict(
        os.environ,
        OE_SPLIT_PORTS=",".join(str(port) for _, port in workers),
        OE_SPLIT_PIDS=json.dumps(
            {f"w{index}": process.pid for index, (process, _) in enumerate(workers)}
        ),
        OE_SPLIT_POSTMASTER=str(postmaster(uri)),
    )
    try:
        command = rawgen(
            harness,
            args.gen_cpu,
            f"http://127.0.0.1:{workers[0][1]}",
            args.clients,
            args.messages,
            preload=str(SPLIT),
            server_pid=str(workers[0][0].pid),
            window="10",
            max_seconds="240",
            label=f"workers-{args.servers}",
        )
        result = subprocess.run(
            command,
            cwd=harness,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        for process, _ in workers:
            stop_process(process)
    record = last_record(result.stdout)
    (workdir / "record.json").write_text(json.dumps(record, indent=1))
    split = record.get("split")
    if not split:
        raise SystemExit(f"no record from rawgen.js: {result.stderr[-3000:]}")
    delivery, latency = record["delivery"], record.get("latency_ms") or {}
    wall, received = split["wall_s"], max(delivery["received"], 1)
    servers = sum(seconds or 0 for seconds in split["cpu_s"].values())
    others = split["host_busy_s"] - servers - split["postgresql_s"]
    others -= split["generator_s"]
    print(
        "| workers | clients per port | deliveries/s | p50 ms | p99 ms | lost, dup"
        " | CPU (cores): each worker | PostgreSQL | generator | other"
        " | server µs/delivery (workers + PostgreSQL) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    each = ", ".join(
        f"{name} {(seconds or 0) / wall:.2f}"
        for name, seconds in split["cpu_s"].items()
    )
    postgresql = split["postgresql_s"]
    print(
        f"| {args.servers} | {'/'.join(map(str, split['clients_per_port'].values()))}"
        f" | {delivery['deliveries_per_s']:,} | {latency.get('p50')}"
        f" | {latency.get('p99')} | {delivery['lost']}, {delivery['duplicates']}"
        f" | {each} | {split['postgresql_s'] / wall:.2f}"
        f" | {split['generator_s'] / wall:.2f} | {max(others, 0) / wall:.2f}"
        f" | {servers / received * 1e6:.2f} + {postgresql / received * 1e6:.2f} |",
        flush=True,
    )


def wait_clients(url: str, count: int, generator: subprocess.Popen) -> int:
    """Wait until the worker at *url* holds *count* clients, or its
    generator ended, or the count stopped growing for 20 s."""
    held, since = -1, time.monotonic()
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and generator.poll() is None:
        now = health(url)["clients"]
        if now >= count:
            return now
        if now != held:
            held, since = now, time.monotonic()
        elif time.monotonic() - since > 20:
            break
        time.sleep(1)
    return health(url)["clients"]


def crowd(args: argparse.Namespace, uri: str, workdir: Path, harness: Path) -> None:
    workers = start_workers(uri, workdir, args.servers, args.server_cpus)
    urls = [f"http://127.0.0.1:{port}" for _, port in workers]
    before = [rss_bytes(process.pid) for process, _ in workers]
    idle = list(before)
    held = [0] * len(workers)
    quiet: list[subprocess.Popen] = []
    connect = {
        "connect_timeout_ms": "400000",
        "ack_timeout_ms": "60000",
        "drain_idle_ms": "15000",
        "max_seconds": "800",
    }
    try:
        # The generators that publish nothing: connected, they wait for a
        # SIGTERM (their settle outlasts the run).
        for index in range(1, len(workers)):
            command = rawgen(
                harness,
                args.gen_cpu,
                urls[index],
                args.clients,
                0,
                settle_ms="700000",
                label=f"crowd-w{index}",
                **connect,
            )
            quiet.append(
                subprocess.Popen(
                    command,
                    cwd=harness,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=die_with_parent,  # noqa: PLW1509
                )
            )
            held[index] = wait_clients(urls[index], args.clients, quiet[-1])
            time.sleep(args.settle)
            idle[index] = rss_bytes(workers[index][0].pid)
        command = rawgen(
            harness,
            args.gen_cpu,
            urls[0],
            args.clients,
            1,
            server_pid=str(workers[0][0].pid),
            settle_ms=str(int(args.settle * 1000)),
            label="crowd-w0",
            **connect,
        )
        main = subprocess.run(
            command,
            cwd=harness,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        record = last_record(main.stdout)
        held[0] = record.get("connect", {}).get("ok", 0)
        idle[0] = int((record.get("server_rss_mib") or {}).get("idle", 0) * MIB)
        others = []
        for generator in quiet:
            generator.send_signal(signal.SIGTERM)
            out, _ = generator.communicate(timeout=60)
            others.append(last_record(out))
    finally:
        for generator in quiet:
            if generator.poll() is None:
                generator.kill()
        for process, _ in workers:
            stop_process(process)
    delivery = record.get("delivery", {})
    latency = record.get("latency_ms") or {}
    crossed = sum(
        (other.get("delivery") or {}).get("unexpected", 0) for other in others
    )
    print(
        "| workers | clients held (each) | together | RSS before → idle (MiB, each)"
        " | KiB per connection (each) | broadcast from w0: delivered"
        " | w0's last client has it (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    rss = ", ".join(
        f"{b / MIB:.0f} → {i / MIB:.0f}" for b, i in zip(before, idle, strict=True)
    )
    kib = ", ".join(
        f"{(i - b) / 1024 / max(h, 1):.1f}"
        for b, i, h in zip(before, idle, held, strict=True)
    )
    print(
        f"| {args.servers} | {', '.join(map(str, held))} | {sum(held):,} | {rss}"
        f" | {kib} | {delivery.get('received', 0) + crossed:,} of {sum(held):,}"
        f" | {latency.get('max')} |",
        flush=True,
    )
    print(f"\nw0 generator: {record.get('status')}, errors {record.get('errors')}")
    for index, other in enumerate(others, 1):
        print(f"w{index} generator: connect {other.get('connect')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("fanout", "crowd"))
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument(
        "--clients", type=int, help="fanout: all of them (1000); crowd: per worker"
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--settle", type=float, default=5, metavar="SECONDS")
    parser.add_argument("--gen-cpu", default="0")
    parser.add_argument("--server-cpus", help="pin every worker to these CPUs")
    parser.add_argument("--harness", help="the shared harness's directory")
    args = parser.parse_args()
    if args.clients is None:
        args.clients = 1000 if args.mode == "fanout" else 19_000
    if args.servers < 1:
        parser.error("--servers must be at least 1")
    raise_nofile_limit()
    watchdog(1200)
    harness = harness_directory(args.harness)
    uri = server_uri()
    create_database(uri)
    try:
        with tempfile.TemporaryDirectory(prefix="oe-bench-load-") as directory:
            run = fanout if args.mode == "fanout" else crowd
            run(args, uri, Path(directory), harness)
    finally:
        with contextlib.suppress(Exception):
            drop_database(uri)


if __name__ == "__main__":
    main()
