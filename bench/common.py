"""What the benchmarks share: starting a target server, reading its CPU time
and memory from /proc, percentiles.

A target runs in its own process, so its CPU time and memory are its own and
the load generator (another process) does not disturb the figures.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gevent

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


#: prctl(2) option: the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` of a child: be terminated if the benchmark dies, so
    that a benchmark killed by its watchdog leaves no server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def watchdog(seconds: float) -> None:
    """Bound the whole run: after *seconds*, print every thread's stack and
    exit with status 1.

    A hard limit, in a C thread, because ``gevent.Timeout`` is not enough:
    websocket-client's ``close()`` swallows every exception (a bare
    ``except``), the timeout included.
    """
    faulthandler.dump_traceback_later(seconds, exit=True)
    print(f"# watchdog: this run gives up after {seconds:g} s", file=sys.stderr)


def raise_nofile_limit() -> int:
    """Raise this process's open files limit to its hard limit; return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def own_cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_target(
    target: str,
    port: int,
    wrapper: list[str] | None = None,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
    sources: Path | None = None,
) -> subprocess.Popen:
    """Start the server to measure on *port*; return once it accepts.

    :param wrapper: a script (and its arguments) that runs the server's
        command, such as ``bench/memory_probe.py``.
    :param env: variables added to the server's environment.
    :param extra: more arguments of the ``oe`` server (e.g. ``-c FILE``).
    :param sources: where to import ``oe_web_socketio`` from instead of the
        checkout (:func:`export_egg`).
    """
    path = [str(ROOT), *sys.path]
    if sources is not None:
        path.insert(0, str(sources))
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(path)}
    prefix = [sys.executable, *(wrapper or [])]
    if target == "plain":
        command = [*prefix, str(ROOT / "bench" / "plain_server.py"), str(port)]
    elif target == "oe":
        command = [
            *prefix,
            "-m",
            "oe_web_socketio",
            "-p",
            str(port),
            "--log-level",
            "warning",
            "--namespace",
            "/bench=bench.namespaces:Bench",
            *(extra or []),
        ]
    else:
        raise SystemExit(f"unknown target {target!r}: plain or oe")
    # preexec_fn: the benchmarks run no real threads (gevent's greenlets).
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        preexec_fn=die_with_parent,  # noqa: PLW1509
    )
    wait_accepting(process, port, 30, f"{target} server")
    return process


#: The egg's sources, relative to the checkout.
EGG_SOURCES = Path("src") / "oe.web.socketio" / "src"


def export_egg(commit: str, directory: Path) -> Path:
    """The egg's sources as *commit* has them, exported with ``git
    archive`` into *directory* (the git-ignored egg-info and JavaScript
    bundle copied from the checkout); return the directory to put first on
    ``sys.path`` so that ``oe_web_socketio`` is imported from there."""
    archive = subprocess.run(
        ["git", "archive", commit, str(EGG_SOURCES)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    for ignored in ("oe.web.socketio.egg-info", "oe_web_socketio/static"):
        if (ROOT / EGG_SOURCES / ignored).exists():
            shutil.copytree(
                ROOT / EGG_SOURCES / ignored,
                directory / EGG_SOURCES / ignored,
                dirs_exist_ok=True,
            )
    return directory / EGG_SOURCES


def measure_variants(
    measure: Callable[[Path | None], dict[str, float]],
    commits: Sequence[str],
    reps: int,
    prefix: str,
    sources: Sequence[Path] = (),
) -> dict[str, list[dict[str, float]]]:
    """Run *measure* on each variant *reps* times, the variants interleaved
    within each rep (so that a change of the machine's load touches them
    all): the egg of each of *commits* (exported with :func:`export_egg`),
    each source tree of *sources*, or, without either, this checkout
    (*measure* given ``None``). Each result is printed to stderr as it
    comes; return them by variant name."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=ROOT / "var") as tmp:
        variants: list[tuple[str, Path | None]] = []
        for index, commit in enumerate(commits):
            directory = Path(tmp) / str(index)
            directory.mkdir()
            variants.append((commit, export_egg(commit, directory)))
        variants += [(str(path), path) for path in sources]
        variants = variants or [("checkout", None)]
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
        for rep in range(reps):
            for name, tree in variants:
                result = measure(tree)
                results[name].append(result)
                print(f"# rep {rep + 1} {name}: {result}", file=sys.stderr)
    return results


def egg_launcher(commit: str | None, workdir: Path) -> tuple[Path, Path]:
    """``bin/oe_web_socketio`` and the egg's sources, or, given *commit*,
    a copy of the script that runs the egg as *commit* has it and those
    sources (exported with :func:`export_egg` into *workdir*)."""
    script = ROOT / "bin" / "oe_web_socketio"
    if commit is None:
        return script, ROOT / EGG_SOURCES
    tree = workdir / "tree"
    tree.mkdir()
    sources = export_egg(commit, tree)
    copy = workdir / "oe_web_socketio"
    copy.write_text(
        script.read_text().replace(repr(str(ROOT / EGG_SOURCES)), repr(str(sources)))
    )
    copy.chmod(0o755)
    return copy, sources


def wait_accepting(
    process: subprocess.Popen, port: int, timeout: float, what: str
) -> None:
    """Return once *port* of 127.0.0.1 accepts connections; exit if
    *process* (*what*) ends first, or stop it and exit after *timeout*
    seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited with {process.returncode}") from None
            time.sleep(0.05)
    stop(process)
    raise SystemExit(f"{what} did not start in {timeout:g} s")


def read_line(worker: subprocess.Popen, timeout: float, what: str) -> str:
    """The next line a client process writes, waited for up to *timeout*
    seconds (the process runs gevent: its pipes are cooperative)."""
    with gevent.Timeout(timeout, False):
        line = worker.stdout.readline()
        if line:
            return line
    raise SystemExit(f"a client process sent no {what} in {timeout:g} s")


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


def disconnect_all(clients: list, timeout: float = 30) -> int:
    """Disconnect *clients* (python-socketio clients) all at once; return
    how many had not finished after *timeout* seconds.

    At once, because each disconnection may wait up to 3 s for the
    server's WebSocket close frame (websocket-client's default), which a
    server that reads that frame as an HTTP request never sends.
    """
    import gevent

    jobs = [gevent.spawn(client.disconnect) for client in clients]
    gevent.joinall(jobs, timeout=timeout)
    return sum(1 for job in jobs if not job.dead)
