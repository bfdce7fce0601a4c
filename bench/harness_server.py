"""oe_web_socketio as the server under test of the shared load harness.

The harness (``../shared/bench``, see its README) runs the command in
``OE_SERVER_CMD``, waits for a line with ``READY`` and ``pid=N`` on
standard output, and drives the ``/bench`` protocol
(:class:`bench.namespaces.Harness`) on port 3007::

    export OE_SERVER_CMD="$PWD/bin/python $PWD/bench/harness_server.py --port 3007"
    python3 run_matrix.py --servers node,gevent-nodelay,oe --gen client,raw ...

It is the real command line (``oe_web_socketio.cli.main``) with no
database, the per-event log line off (the reference servers log nothing)
and ``--log-level warning``; ``READY`` is printed when the command line
logs that it listens. Extra arguments go to the command line
(``-c CONFIG`` for other settings).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Ready(logging.Handler):
    """Prints the harness's READY line on the command line's "Listening on"."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Listening on"):
            print(f"READY pid={os.getpid()} {record.getMessage()}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3007)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--tree",
        type=Path,
        help="run the egg of this checkout instead (before/after runs: "
        "git archive an older commit there)",
    )
    args, rest = parser.parse_known_args()
    sys.path.insert(0, str(ROOT))
    if args.tree is not None:
        sys.path.insert(0, str(args.tree / "src" / "oe.web.socketio" / "src"))
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as file:
        file.write("[oe_web_socketio]\nmessage_log_format =\n")
    cli_logger = logging.getLogger("oe_web_socketio.cli")
    cli_logger.setLevel(logging.INFO)
    cli_logger.addHandler(Ready())
    cli_logger.propagate = False
    from oe_web_socketio.cli import main as cli_main

    try:
        return cli_main(
            [
                "-c",
                file.name,
                "-i",
                args.host,
                "-p",
                str(args.port),
                "--no-entry-points",
                "--log-level",
                "warning",
                "-n",
                "/bench=bench.namespaces:Harness",
                *rest,
            ]
        )
    finally:
        os.unlink(file.name)


if __name__ == "__main__":
    sys.exit(main())
