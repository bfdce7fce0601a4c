"""Long-polling handlers that spend time in SQL: how long N of them take
on a pool of max_cursor cursors.

Starts ``bin/oe_web_socketio`` on a free port, serving DATABASE (an
existing Tryton database; the appliance's by default) with the routes of
``tests/longpolling_routes.py``, logs in through trytond's JSON-RPC, then
sends N concurrent ``POST /longpolling/t/sleep`` that each run
``pg_sleep(SECONDS)`` in their read-only transaction, and prints a Markdown
row per pool size: the ideal is ``SECONDS * N / max_cursor`` (the handlers
run max_cursor at a time), one after another would be ``SECONDS * N``.

    bin/python bench/longpolling.py --max-cursor 4 8 16 --handlers 200

Nothing is written to the database but the session of the login.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, die_with_parent, free_port, stop, watchdog


def login(url: str, database: str, user: str, password: str) -> str:
    """A session of *user*, as the ``Authorization: Session`` header holds it."""
    request = urllib.request.Request(
        f"{url}/{database}/rpc/",
        data=json.dumps(
            {
                "id": 1,
                "method": "common.db.login",
                "params": [user, {"password": password}, "en"],
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        uid, key, *_ = json.load(response)["result"]
    return base64.b64encode(f"{user}:{uid}:{key}".encode()).decode()


def start_server(
    database: str, port: int, max_cursor: int, workdir: Path
) -> subprocess.Popen:
    config = workdir / f"bench-longpolling-{port}.conf"
    config.write_text(
        "[oe_web_socketio]\n"
        f"databases = {database}\nport = {port}\nmax_cursor = {max_cursor}\n"
        f"trytond_config = {ROOT / 'etc' / 'trytond.conf'}\n"
        "pool_timeout = 600\nlongpolling_timeout = 600\n"
        "longpolling_modules = tests.longpolling_routes\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [
            str(ROOT / "bin" / "oe_web_socketio"),
            "-c",
            str(config),
            "--log-level",
            "warning",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        # Started while no other thread runs (the clients' have ended).
        preexec_fn=die_with_parent,  # noqa: PLW1509
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return process
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise SystemExit("the server did not start")


def post(url: str, session: str, seconds: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps({"seconds": str(seconds)}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Session {session}",
        },
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def run(port: int, session: str, handlers: int, seconds: float) -> tuple[float, float]:
    """Send the handlers at once; return the wall time and the span of the
    database's clock from the first start to the last end."""
    url = f"http://127.0.0.1:{port}/longpolling/t/sleep"
    post(url, session, 0)  # the models are loaded
    with concurrent.futures.ThreadPoolExecutor(handlers) as pool:
        started = time.monotonic()
        spans = list(pool.map(lambda _: post(url, session, seconds), range(handlers)))
        wall = time.monotonic() - started
    return wall, max(s["end"] for s in spans) - min(s["start"] for s in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="oe")
    parser.add_argument("--trytond", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default=None, help="default: var/admin-password")
    parser.add_argument("--max-cursor", type=int, nargs="+", default=[8])
    parser.add_argument("--handlers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    watchdog(900)
    password = args.password or (ROOT / "var" / "admin-password").read_text().strip()
    session = login(args.trytond, args.database, args.user, password)
    workdir = ROOT / "var" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        "| max_cursor | handlers | SQL each (s) | ideal (s) | wall (s) | db span (s) |"
    )
    print("|---|---|---|---|---|---|")
    for max_cursor in args.max_cursor:
        port = free_port()
        server = start_server(args.database, port, max_cursor, workdir)
        try:
            wall, span = run(port, session, args.handlers, args.seconds)
        finally:
            stop(server)
        ideal = args.seconds * args.handlers / max_cursor
        print(
            f"| {max_cursor} | {args.handlers} | {args.seconds:g} | {ideal:.2f} "
            f"| {wall:.2f} | {span:.2f} |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
