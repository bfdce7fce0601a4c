"""What an integrator sees when something is wrong: one line saying what and
what to do, and a non-zero exit.

Each test configures a copy of this checkout through its own local.cfg (its
own ports, cluster and database; this checkout's eggs and develop eggs), runs
the buildout, then the command a user would run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from .appliance import ROOT, Appliance, clean_environment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The copy's real-time workers, on [ports] socketio upward: as many as
#: the cores the buildout counts (``socketio-workers = auto``).
COPY_WORKERS = len(os.sched_getaffinity(0))


def _free_ports(count: int, taken: set[int]) -> int:
    """The first of *count* consecutive free ports, none of *taken*."""
    for _ in range(100):
        first = _free_port()
        ports = set(range(first, first + count))
        if ports & taken or max(ports) > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in ports:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


class ApplianceCopy(Appliance):
    """A copy of the committed files of this checkout, built by its buildout."""

    def configure(self, extra: str = "") -> subprocess.CompletedProcess:
        """Write local.cfg (base settings plus ``extra``) and run the buildout,
        as a user would: ``bin/buildout``, which reads local.cfg itself."""
        (self.directory / "local.cfg").write_text(
            self.base_cfg + textwrap.dedent(extra)
        )
        return subprocess.run(
            [str(ROOT / "bin" / "buildout")],
            cwd=self.directory,
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
            env=clean_environment(),
            stdin=subprocess.DEVNULL,
        )

    @property
    def base_cfg(self) -> str:
        # The eggs this checkout's buildout developed, used where they are:
        # developing them again (pip's editable installs, one per egg) took
        # 36 of the 41 s of each configure. The copy has no src/ of its own.
        return textwrap.dedent(
            f"""\
            [buildout]
            eggs-directory = {ROOT / "eggs"}
            develop-eggs-directory = {ROOT / "develop-eggs"}
            develop =
            newest = false

            [ports]
            http = {self.ports[0]}
            trytond = {self.ports[1]}
            socketio = {self.ports[2]}
            """
        )

    ports: tuple[int, int, int] = (0, 0, 0)


@pytest.fixture(scope="module")
def copy():
    # Under var/ rather than /tmp: pytest's and mkdtemp's directories are
    # private to root, and the private cluster runs as postgres.
    directory = ROOT / "var" / "tests" / "appliance-copy"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    directory.parent.chmod(0o755)
    directory.chmod(0o755)
    files = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if name.startswith("src/"):
            continue
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    appliance = ApplianceCopy(directory)
    http, trytond = _free_port(), _free_port()
    while trytond == http:
        trytond = _free_port()
    # Every worker's port free, none of the others.
    socketio = _free_ports(COPY_WORKERS, {http, trytond})
    object.__setattr__(appliance, "ports", (http, trytond, socketio))
    yield appliance
    if appliance.supervisord_running():
        appliance.shutdown()
    shutil.rmtree(directory, ignore_errors=True)


def _one_line_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_distribution_missing_from_versions_cfg_fails_the_buildout(copy):
    versions = copy.directory / "versions.cfg"
    pinned = versions.read_text()
    assert "\nbidict = " in pinned
    versions.write_text(
        "".join(
            line for line in pinned.splitlines(True) if not line.startswith("bidict =")
        )
    )
    try:
        result = copy.configure()
    finally:
        versions.write_text(pinned)
    assert result.returncode != 0
    assert (
        "The `bidict` egg does not have a version pin" in result.stdout + result.stderr
    )


def test_the_copy_builds_with_every_pin(copy):
    result = copy.configure()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (copy.directory / "bin" / "start").exists()


def test_a_missing_debian_package_is_named(copy):
    assert (
        copy.configure("[nginx]\nexecutable = /nonexistent/sbin/nginx\n").returncode
        == 0
    )
    line = _one_line_failure(copy.run("start", "--daemon"))
    assert "nginx is missing" in line
    assert "apt-get install" in line


def test_a_port_already_taken_is_named(copy):
    assert copy.configure().returncode == 0
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", copy.ports[0]))
        squatter.listen()
        line = _one_line_failure(copy.run("start", "--daemon"))
    assert f"port {copy.ports[0]} ([ports] http) is already in use" in line
    assert not copy.supervisord_running()


def test_an_admin_password_tryton_refuses(copy):
    assert (
        copy.configure(
            "[settings]\ndatabase = short_password\nadmin-password = abc\n"
        ).returncode
        == 0
    )
    line = _one_line_failure(copy.run("start", "--daemon"))
    assert "admin password in local.cfg is shorter than 8 characters" in line


def test_an_existing_database_that_is_not_tryton(copy):
    assert copy.configure().returncode == 0
    uri = (copy.directory / "etc" / "trytond.conf").read_text()
    uri = next(
        line.split("=", 1)[1].strip()
        for line in uri.splitlines()
        if line.startswith("uri")
    )
    # Bring the cluster up and give it another application's database.
    copy.run("supervisord")
    for _ in range(60):
        ready = subprocess.run(
            ["psql", uri, "-X", "-q", "-c", "SELECT 1"],
            env={"PGDATABASE": "postgres", "PATH": "/usr/bin:/bin"},
            check=False,
            capture_output=True,
        )
        if ready.returncode == 0:
            break
        time.sleep(0.5)
    for sql, database in (
        ("CREATE DATABASE foreign_app", "postgres"),
        ("CREATE TABLE invoice (id int)", "foreign_app"),
    ):
        subprocess.run(
            ["psql", uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={"PGDATABASE": database, "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
        )
    assert copy.configure("[settings]\ndatabase = foreign_app\n").returncode == 0
    line = _one_line_failure(copy.run("start", "--daemon"))
    assert "'foreign_app' already exists and is not a Tryton database" in line


def test_a_postgresql_that_will_not_start(copy):
    assert copy.configure().returncode == 0
    copy.run("supervisord")
    copy.run("supervisorctl", "stop", "postgresql")
    conf = Path(copy.directory / "var" / "postgresql" / "postgresql.conf")
    original = conf.read_text()
    conf.write_text(original + "\nno_such_setting = 1\n")
    try:
        line = _one_line_failure(copy.run("start", "--daemon"))
    finally:
        conf.write_text(original)
    assert "PostgreSQL did not start" in line
    assert "var/log/postgresql.log" in line


def _copy_processes(copy: ApplianceCopy) -> list[str]:
    """The processes of the copy: those whose command line or working
    directory is in it (PostgreSQL's backends run in its data directory)."""
    where = str(copy.directory)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if where in cmdline or cwd == where or cwd.startswith(where + "/"):
            found.append(f"{proc.name} {cmdline.strip()} (in {cwd})")
    return found


def _assert_nothing_left(copy: ApplianceCopy) -> None:
    assert _copy_processes(copy) == []
    assert not (copy.directory / "var" / "run" / "supervisord.pid").exists()
    http, trytond, socketio = copy.ports
    for port in (http, trytond, *range(socketio, socketio + COPY_WORKERS)):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} open"


class ForegroundStart:
    """``bin/start`` of the copy as ``make run`` runs it in a terminal: in a
    process group of its own, where Ctrl-C sends SIGINT to every process
    (exec resets pytest's handler to the default, as a terminal has it).
    Its output is read by a thread, so that waits stay bounded."""

    def __init__(self, copy: ApplianceCopy) -> None:
        self.copy = copy
        self.process = subprocess.Popen(
            [copy.bin("start")],
            cwd=copy.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_environment(),
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, condition, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"exited before {what}: {self.output}"
            assert time.monotonic() < deadline, f"no {what}: {self.output}"
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def terminate(self) -> None:
        """SIGTERM to bin/start alone, as ``kill PID`` does."""
        self.process.send_signal(signal.SIGTERM)

    def finish(self, timeout: float = 180) -> int:
        """Wait for the exit (killing the group past *timeout*); return it."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        finally:
            self._reader.join(5)
            self.process.stdout.close()
        return self.process.returncode


def _trytond_admin_runs(copy: ApplianceCopy) -> bool:
    return any("bin/trytond-admin" in p for p in _copy_processes(copy))


def test_ctrl_c_or_sigterm_at_any_moment_of_the_start_leaves_nothing_running(copy):
    """The first run's database creation, interrupted by Ctrl-C, then by a
    SIGTERM to bin/start alone (bash would run its trap only once
    trytond-admin ended); the start-up interrupted by Ctrl-C; the run that
    completes it refuses a second foreground run; Ctrl-C stops the stack.
    Each time, once bin/start has exited, no process of the copy is left."""
    assert copy.configure("[settings]\ndatabase = interrupted\n").returncode == 0
    if copy.supervisord_running():
        copy.shutdown()
    for interrupt, status in (("ctrl_c", 130), ("terminate", 143)):
        start = ForegroundStart(copy)
        start.wait_until(lambda: _trytond_admin_runs(copy), "trytond-admin")
        getattr(start, interrupt)()
        assert start.finish() == status, start.output
        assert "Interrupted: stopping the appliance" in start.output
        _assert_nothing_left(copy)
    pid_file = copy.directory / "var" / "run" / "supervisord.pid"
    start = ForegroundStart(copy)
    start.wait_until(pid_file.exists, "supervisord")
    start.ctrl_c()
    assert start.finish() == 130, start.output
    _assert_nothing_left(copy)
    start = ForegroundStart(copy)
    try:
        start.wait_until(
            lambda: "Ctrl-C stops the whole stack" in start.output, "start"
        )
        assert set(copy.status().values()) == {"RUNNING"}
        line = _one_line_failure(copy.run("start"))
        assert "the appliance is already running" in line
        assert "make stop" in line
        # The tests' appliance fixture checks a running stack so.
        assert copy.run("start", "--daemon").returncode == 0
        start.ctrl_c()
    finally:
        status = start.finish()
    assert status == 0, start.output
    assert "Stopping the appliance" in start.output
    _assert_nothing_left(copy)


def test_an_external_server_that_cannot_be_reached(copy):
    closed = _free_port()
    assert (
        copy.configure(
            f"""
        [postgresql]
        private = false
        program =
        uri = postgresql://tryton:wrong@127.0.0.1:{closed}/
        """
        ).returncode
        == 0
    )
    if copy.supervisord_running():
        copy.shutdown()
    line = _one_line_failure(copy.run("start", "--daemon"))
    assert "cannot connect to PostgreSQL" in line
    assert "check [postgresql] uri in local.cfg" in line
