"""What the benchmarks share: starting a target server, reading its CPU time
and memory from /proc, percentiles.

A target runs in its own process, so its CPU time and memory are its own and
the load generator (another process) does not disturb the figures.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_target(target: str, port: int) -> subprocess.Popen:
    """Start the server to measure on *port*; return once it accepts."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    if target == "plain":
        command = [sys.executable, str(ROOT / "bench" / "plain_server.py"), str(port)]
    elif target == "oe":
        command = [
            sys.executable,
            "-m",
            "oe_web_socketio",
            "-p",
            str(port),
            "--log-level",
            "warning",
            "--namespace",
            "/bench=bench.namespaces:Bench",
        ]
    else:
        raise SystemExit(f"unknown target {target!r}: plain or oe")
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(
                    f"{target} server exited with {process.returncode}"
                ) from None
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{target} server did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid*."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]
