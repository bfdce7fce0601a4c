"""Held polls of the Tryton bus: how many one server process carries, and
its memory per held poll, for oe_web_socketio and for trytond itself.

Each target serves ``POST /<db>/bus`` for the appliance's database (``oe``
unless ``--database``) with ``[bus] allow_subscribe`` on, in a process of
its own on a free loopback port:

* ``oe``: ``python -m oe_web_socketio`` (one gevent process);
* ``trytond``: ``bin/start_tryton`` (trytond's threaded werkzeug server:
  one thread per held poll).

The benchmark logs in as the appliance's admin (its session, one for all
polls), starts ``--workers`` client processes (gevent, raw HTTP/1.1) that
open ``--polls`` polls of one new channel between them, as the web client
sends them, and stop opening at their first failure. Once the server is
idle again (its CPU time stands still), it reads the server's RSS, then
publishes one message on that channel with ``NOTIFY "bus"`` exactly as
trytond's ``Bus.publish`` does, and counts the polls answered with it: a
poll counts as held only if it got the message. Then it logs out.

Figures: polls held, failures (first kind seen), RSS before and with the
polls, KiB per held poll, the server's threads, and the time from the
NOTIFY to the last answer (p50, max). Nothing asserts on them.

Usage: bin/python bench/bus_polls.py --target oe --polls 10000 --workers 4
       bin/python bench/bus_polls.py --target trytond --polls 10000
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import configparser  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import psycopg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    cpu_seconds,
    die_with_parent,
    free_port,
    percentile,
    raise_nofile_limit,
    read_line,
    rss_bytes,
    stop,
    wait_accepting,
    watchdog,
)

#: Seconds a server has to start (trytond loads its pool first).
START_TIMEOUT = 90
#: Polls a client process opens at once.
BATCH = 100
#: Seconds one poll may take to connect and send.
CONNECT_TIMEOUT = 30
#: Seconds the server's CPU time must stand still to call it idle, and the
#: most seconds to wait for that.
IDLE_SECONDS = 1.0
SETTLE_TIMEOUT = 120


# --- worker: a process of polling clients


def poll_request(args: argparse.Namespace) -> bytes:
    body = json.dumps({"last_message": None, "channels": [args.channel]}).encode()
    head = (
        f"POST /{args.database}/bus HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{args.port}\r\n"
        f"Authorization: Session {args.session}\r\n"
        "Content-Type: application/json\r\n"
        "X-Requested-With: XMLHttpRequest\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def run_worker(args: argparse.Namespace) -> None:
    """Open ``args.polls`` polls (stop at the first failure), print
    ``sent N``; then wait for their answers until ``args.deadline`` seconds
    after the first one and print the result as one JSON line."""
    request = poll_request(args)
    answers: list[tuple[float, int, bytes]] = []
    failures: list[str] = []
    sockets: list[socket.socket] = []

    def poll() -> None:
        try:
            sock = socket.create_connection(
                ("127.0.0.1", args.port), timeout=CONNECT_TIMEOUT
            )
            sockets.append(sock)
            sock.sendall(request)
        except OSError as exc:
            failures.append(f"connect: {exc}")
            return
        # Wait for the answer as long as the run lasts.
        sock.settimeout(None)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            failures.append(f"read: {exc}")
            return
        finally:
            sock.close()
        raw = b"".join(chunks)
        match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
        status = int(match.group(1)) if match else 0
        answers.append((time.time(), status, raw.partition(b"\r\n\r\n")[2]))

    greenlets = []
    for start in range(0, args.polls, BATCH):
        if failures:
            break
        batch = [gevent.spawn(poll) for _ in range(min(BATCH, args.polls - start))]
        greenlets.extend(batch)
        # Each batch is sent before the next one opens.
        with gevent.Timeout(CONNECT_TIMEOUT, False):
            while len(sockets) + len(failures) < len(greenlets):
                gevent.sleep(0.01)
    print(f"sent {len(sockets)}", flush=True)
    # The clock starts at the first answer: the other client processes may
    # still be opening theirs, and the server settling, when this one is.
    deadline = time.time() + 3 * SETTLE_TIMEOUT + args.deadline
    while not answers and len(failures) < len(greenlets) and time.time() < deadline:
        gevent.sleep(0.05)
    deadline = time.time() + args.deadline
    while len(answers) + len(failures) < len(greenlets) and time.time() < deadline:
        gevent.sleep(0.05)
    for greenlet in greenlets:
        greenlet.kill(block=False)
    with_message = [
        at for at, status, body in answers if status == 200 and b'"message":{' in body
    ]
    others = {
        f"{status} {body[:80]!r}"
        for _, status, body in answers
        if not (status == 200 and b'"message":{' in body)
    }
    result = {
        "sent": len(sockets),
        "answered_with_message": with_message,
        "unanswered": len(greenlets) - len(answers) - len(failures),
        "other_answers": sorted(others),
        "failures": failures[:3],
        "failure_count": len(failures),
    }
    print(json.dumps(result), flush=True)


# --- the targets


def appliance_settings(database: str) -> tuple[configparser.ConfigParser, str]:
    """trytond's configuration of the appliance, with the bus enabled, and
    the libpq URI of *database*."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "etc" / "trytond.conf", encoding="utf-8")
    if not parser.has_section("bus"):
        parser.add_section("bus")
    parser.set("bus", "allow_subscribe", "True")
    uri = parser["database"]["uri"]
    return parser, uri


def write_config(parser: configparser.ConfigParser, path: Path) -> None:
    with path.open("w", encoding="utf-8") as file:
        parser.write(file)


def raise_child_nofile_limit() -> None:
    die_with_parent()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(
    target: str, port: int, database: str, workdir: Path, log: Path
) -> subprocess.Popen:
    """Start *target* serving the bus of *database* on *port*; return once
    it answers."""
    parser, _uri = appliance_settings(database)
    trytond_conf = workdir / "trytond.conf"
    if target == "trytond":
        parser.set("web", "listen", f"127.0.0.1:{port}")
        write_config(parser, trytond_conf)
        command = [
            str(ROOT / "bin" / "start_tryton"),
            "-c",
            str(trytond_conf),
            "-d",
            database,
        ]
    else:
        write_config(parser, trytond_conf)
        ours = configparser.ConfigParser(interpolation=None)
        ours["oe_web_socketio"] = {
            "databases": database,
            "interface": "127.0.0.1",
            "port": str(port),
            "trytond_config": str(trytond_conf),
            "log_level": "WARNING",
            "load_entry_points": "false",
        }
        our_conf = workdir / "oe_web_socketio.conf"
        write_config(ours, our_conf)
        command = [sys.executable, "-m", "oe_web_socketio", "-c", str(our_conf)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("TRYTOND_CONFIG", None)
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_child_nofile_limit,  # noqa: PLW1509 - no threads
        )
    wait_accepting(process, port, START_TIMEOUT, f"{target} (log: {log})")
    return process


def trytond_port() -> int:
    parser, _ = appliance_settings("")
    return int(parser["web"]["listen"].rpartition(":")[2])


def rpc(port: int, database: str, method: str, params: list, session=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{database}/rpc/",
        data=json.dumps({"id": 1, "method": method, "params": params}).encode(),
        headers={"Content-Type": "application/json"},
    )
    if session:
        request.add_header("Authorization", f"Session {session}")
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    if answer.get("error"):
        raise SystemExit(f"{method}: {answer['error']}")
    return answer["result"]


def login(port: int, database: str) -> str:
    password = (ROOT / "var" / "admin-password").read_text().strip()
    uid, key, *_ = rpc(
        port, database, "common.db.login", ["admin", {"password": password}, "en"]
    )
    return base64.b64encode(f"admin:{uid}:{key}".encode()).decode()


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"Threads:\s+(\d+)", status).group(1))


def wait_idle(pid: int) -> None:
    """Wait until process *pid* used no CPU for ``IDLE_SECONDS``."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(IDLE_SECONDS)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


def publish(uri: str, database: str, channel: str) -> float:
    """``NOTIFY "bus"`` as trytond's ``Bus.publish``; return when."""
    payload = json.dumps(
        {
            "channel": channel,
            "message": {"type": "bench", "message_id": str(uuid.uuid4())},
        },
        separators=(",", ":"),
    )
    with psycopg.connect(uri, dbname=database, autocommit=True) as conn:
        published = time.time()
        conn.execute("SELECT pg_notify('bus', %s)", [payload])
    return published


def run(args: argparse.Namespace) -> dict:
    port = free_port()
    _, uri = appliance_settings(args.database)
    channel = f"bench:{uuid.uuid4()}"
    workdir = Path(tempfile.mkdtemp(prefix="bus_polls-"))
    log = workdir / f"{args.target}.log"
    server = start_server(args.target, port, args.database, workdir, log)
    workers: list[subprocess.Popen] = []
    login_port = port if args.target == "trytond" else trytond_port()
    session = login(login_port, args.database)
    try:
        # A first poll answered, so that imports, first-use caches and
        # trytond's bus listener are not charged to the held polls.
        warm_channel = f"bench:{uuid.uuid4()}"
        warm = start_workers(args, port, session, warm_channel, 1)
        read_line(warm[0], 60, "sent")
        time.sleep(1)
        publish(uri, args.database, warm_channel)
        json.loads(read_line(warm[0], 3 * SETTLE_TIMEOUT + args.deadline, "result"))
        warm[0].wait(10)
        wait_idle(server.pid)
        before = rss_bytes(server.pid)
        threads_before = threads(server.pid)

        started = time.time()
        workers = start_workers(args, port, session, channel, args.polls)
        sent = 0
        for worker in workers:
            sent += int(read_line(worker, SETTLE_TIMEOUT * 2, "sent").split()[1])
        opened_s = time.time() - started
        wait_idle(server.pid)
        after = rss_bytes(server.pid)
        threads_after = threads(server.pid)
        published = publish(uri, args.database, channel)
        results = [
            json.loads(
                read_line(worker, 3 * SETTLE_TIMEOUT + args.deadline + 60, "result")
            )
            for worker in workers
        ]
        for worker in workers:
            worker.wait(30)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        stop(server)
        try:
            rpc(login_port, args.database, "common.db.logout", [], session)
        except (OSError, SystemExit):
            # The bench's trytond is stopped: log out through the stack's.
            rpc(trytond_port(), args.database, "common.db.logout", [], session)

    delays = sorted(
        at - published for r in results for at in r["answered_with_message"]
    )
    held = len(delays)
    failures = [f for r in results for f in r["failures"]]
    others = sorted({a for r in results for a in r["other_answers"]})
    return {
        "target": args.target,
        "polls": args.polls,
        "sent": sent,
        "held": held,
        "failures": sum(r["failure_count"] for r in results),
        "unanswered": sum(r["unanswered"] for r in results),
        "first_failure": (failures or others or ["-"])[0][:60],
        "rss_before_mib": round(before / 2**20, 1),
        "rss_held_mib": round(after / 2**20, 1),
        "kib_per_held_poll": round((after - before) / max(held, 1) / 1024, 1),
        "threads": f"{threads_before}->{threads_after}",
        "open_polls_per_s": round(sent / max(opened_s, 1e-9)),
        "answer_p50_ms": round(percentile(delays, 0.5) * 1000),
        "answer_max_ms": round((delays[-1] if delays else float("nan")) * 1000),
    }


def start_workers(
    args: argparse.Namespace, port: int, session: str, channel: str, polls: int
) -> list[subprocess.Popen]:
    count = min(args.workers, polls)
    sizes = [polls // count] * count
    sizes[0] += polls - sum(sizes)
    return [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                "--port",
                str(port),
                "--database",
                args.database,
                "--session",
                session,
                "--channel",
                channel,
                "--polls",
                str(size),
                "--deadline",
                str(args.deadline),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
            preexec_fn=raise_child_nofile_limit,  # noqa: PLW1509 - no threads
        )
        for size in sizes
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("oe", "trytond"), default="oe")
    parser.add_argument("--database", default="oe")
    parser.add_argument("--polls", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument(
        "--deadline", type=float, default=60, help="seconds to wait for answers"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--session", help=argparse.SUPPRESS)
    parser.add_argument("--channel", help=argparse.SUPPRESS)
    args = parser.parse_args()
    limit = raise_nofile_limit()
    if args.worker:
        run_worker(args)
        return
    if args.polls + 200 > limit:
        raise SystemExit(f"{args.polls} polls need more than {limit} descriptors")
    watchdog(START_TIMEOUT + 8 * SETTLE_TIMEOUT + 2 * args.deadline + 180)
    row = run(args)
    if args.json:
        print(json.dumps(row))
        return
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(str(value) for value in row.values()) + " |")


if __name__ == "__main__":
    main()
