"""A crowd of idle WebSockets on one server process, then one broadcast to
all of them.

Starts the server pinned to CPU 1 (``oe``: ``bench/harness_server.py``, the
real command line serving the shared harness's ``/bench`` protocol;
``node``: the harness's Node Socket.IO 4.8 server), then the harness's lean
generator (``rawgen.js``: Engine.IO over a bare ``ws`` WebSocket, offering
``permessage-deflate`` as browsers do) pinned to CPU 0, whose N clients
join one room. Once they are all connected and have been idle for
``--settle`` seconds, client 0 publishes one 100-byte message to the room.
It prints one row: clients connected and refused, the server's file
descriptors at most, its RSS before and with the crowd idle, KiB per
connection, then the broadcast: deliveries, the time until half the
clients and the last one had it, the server's peak RSS and CPU; then what the
server logged at warning level and above, counted by kind (how it fails
when it does).

Usage (from the repository root)::

    bin/python bench/crowd.py --target oe --clients 19000
    bin/python bench/crowd.py --target oe --clients 19000 --tree d6dbd7d
    bin/python bench/crowd.py --target oe --clients 19000 --max-connections 0
    bin/python bench/crowd.py --target node --clients 19000

``--tree COMMIT`` serves the egg as that commit has it (for before/after
figures, and while the checkout is being edited). The generator and the
server inherit this process's open files limit, raised to the hard one
(20,000 here): a client holds one descriptor, the server one or two per
client. The run is bounded by a watchdog; the server and the generator
die with it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    cpu_seconds,
    die_with_parent,
    export_egg,
    free_port,
    raise_nofile_limit,
    stop,
    watchdog,
)

#: Where the shared load harness may be, with its npm install done.
HARNESSES = (ROOT.parent / "shared" / "bench", Path("/tmp/sbench/bench"))


def harness_directory(given: str | None) -> Path:
    candidates = [Path(given)] if given else list(HARNESSES)
    for directory in candidates:
        if (directory / "node_modules" / "ws").is_dir():
            return directory
    raise SystemExit(
        "no shared load harness with its npm install in "
        + ", ".join(map(str, candidates))
        + " (see bench/README.md, The shared load harness)"
    )


def start_server(args: argparse.Namespace, harness: Path, workdir: Path):
    """Start the target on a free port, pinned to CPU 1; return the
    process, its pid and its URL once it says READY."""
    env = dict(os.environ)
    if args.target == "node":
        port = str(free_port())  # it prints port 0 when given 0
        command = ["node", str(harness / "servers" / "node_server.js"), "--port", port]
        cwd = harness
    else:
        config = workdir / "crowd.conf"
        settings = "[oe_web_socketio]\nmessage_log_format =\n"
        if args.max_connections is not None:
            settings += f"max_connections = {args.max_connections}\n"
        config.write_text(settings)
        path = [str(ROOT), *sys.path]
        if args.tree:
            path.insert(0, str(export_egg(args.tree, workdir)))
        env["PYTHONPATH"] = os.pathsep.join(path)
        command = [
            sys.executable,
            str(ROOT / "bench" / "harness_server.py"),
            "--port",
            "0",
            # After the harness's own -c: this one wins.
            "-c",
            str(config),
        ]
        cwd = ROOT
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(
        ["taskset", "-c", args.server_cpu, *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads yet
    )
    deadline = time.monotonic() + 60
    for line in process.stdout:
        match = re.search(r"READY.*pid=(\d+).*(http://[\d.]+:\d+)", line)
        if match:
            return process, int(match.group(1)), match.group(2)
        if time.monotonic() > deadline:
            break
    stop(process)
    raise SystemExit(f"the {args.target} server did not start: see {log.name}")


class Sampler(threading.Thread):
    """Samples the server's descriptors and RSS until told to stop."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.most_descriptors = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                count = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                return
            self.most_descriptors = max(self.most_descriptors, count)


def log_kinds(path: Path) -> list[tuple[int, str]]:
    """The server's log lines by kind (numbers and ids blanked), most
    frequent first."""
    kinds: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        message = re.sub(r"^\S+ \S+ ", "", line)  # the time
        kinds[re.sub(r"\d+|'[^']*'|\([^)]*\)", "#", message)[:140]] += 1
    return [(count, kind) for kind, count in kinds.most_common(8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("oe", "node"), default="oe")
    parser.add_argument("--clients", type=int, default=19_000)
    parser.add_argument("--settle", type=float, default=5, metavar="SECONDS")
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="oe's max_connections (default: not set, from the open files limit)",
    )
    parser.add_argument("--tree", metavar="COMMIT", help="serve the egg of COMMIT")
    parser.add_argument("--harness", help="the shared harness's directory")
    parser.add_argument("--deflate", type=int, choices=(0, 1), default=1)
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--gen-cpu", default="0")
    args = parser.parse_args()
    limit = raise_nofile_limit()
    if args.clients + 100 > limit:
        raise SystemExit(f"{args.clients} clients need more than {limit} descriptors")
    watchdog(900)
    harness = harness_directory(args.harness)
    workdir = Path(tempfile.mkdtemp(prefix="crowd-", dir=ROOT / "var"))
    server, pid, url = start_server(args, harness, workdir)
    sampler = Sampler(pid)
    sampler.start()
    try:
        cpu_before = cpu_seconds(pid)
        generator = subprocess.run(
            [
                "taskset",
                "-c",
                args.gen_cpu,
                "node",
                str(harness / "rawgen.js"),
                "--url",
                url,
                "--clients",
                str(args.clients),
                "--messages",
                "1",
                "--server-pid",
                str(pid),
                "--deflate",
                str(args.deflate),
                "--settle-ms",
                str(int(args.settle * 1000)),
                "--connect-timeout-ms",
                "400000",
                "--ack-timeout-ms",
                "60000",
                "--drain-idle-ms",
                "15000",
                "--max-seconds",
                "700",
                "--label",
                f"crowd-{args.target}",
            ],
            cwd=harness,
            stdout=subprocess.PIPE,
            text=True,
            timeout=800,
            check=False,
        )
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        sampler.done.set()
        stop(server)
        # The exported egg; the log and the record stay.
        shutil.rmtree(workdir / "src", ignore_errors=True)
    record = json.loads(generator.stdout.strip().splitlines()[-1])
    (workdir / "record.json").write_text(json.dumps(record, indent=1))
    connect = record.get("connect", {})
    rss = record.get("server_rss_mib", {})
    delivery = record.get("delivery", {})
    latency = record.get("latency_ms") or {}
    name = args.target if not args.tree else f"{args.target} at {args.tree}"
    print(
        "| server | clients | connected | refused | server fds (most)"
        " | RSS before → idle (MiB) | KiB per connection"
        " | broadcast: delivered | p50 / last client has it (ms)"
        " | peak RSS (MiB) | server CPU, whole run (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {name} | {args.clients} | {connect.get('ok')}"
        f" | {connect.get('failed')} | {sampler.most_descriptors}"
        f" | {rss.get('before')} → {rss.get('idle')} | {record.get('per_conn_kib')}"
        f" | {delivery.get('received')} of {delivery.get('expected')}"
        f" | {latency.get('p50')} / {latency.get('max')}"
        f" | {rss.get('peak')} | {cpu:.1f} |"
    )
    print(f"\nstatus {record.get('status')}; errors {record.get('errors')}")
    if record.get("first_ws_error"):
        print(f"first WebSocket error: {record['first_ws_error']}")
    print(f"server log by kind ({workdir / 'server.log'}):")
    for count, kind in log_kinds(workdir / "server.log"):
        print(f"  {count:6d}  {kind}")


if __name__ == "__main__":
    main()
