"""Fixtures: real server processes, stopped by PID in teardown.

Test modules take what they share from fixtures, never by importing this
file: with several ``conftest.py`` in the repository, ``import conftest``
may find another one.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

#: How the tests run the server: warnings are errors there too.
SERVER_COMMAND = (sys.executable, "-W", "error", "-m", "oe_web_socketio")

#: Seconds a server has to start, or to stop after SIGTERM.
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

LISTENING = re.compile(r"Listening on (http://\S+) \(databases: ([^)]*)\)")

T = TypeVar("T")


def _wait_until(
    probe: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.02
) -> T:
    """Call *probe* until it returns a true value; return that value.

    :raises AssertionError: *timeout* seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"still false after {timeout} s: {probe!r}")
        time.sleep(interval)


class LineCollector(threading.Thread):
    """Reads a text pipe to its end, keeping the lines, so it never fills."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self._pipe = pipe
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self.eof = False

    def run(self) -> None:
        for line in self._pipe:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait for a line matching *pattern*; return its match."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    match = pattern.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    raise AssertionError(
                        f"no line matching {pattern.pattern!r}; got:\n"
                        + "\n".join(self._lines)
                    )
                self._changed.wait(remaining)


@dataclasses.dataclass
class ServerProcess:
    """A server started by the tests."""

    process: subprocess.Popen[str]
    stderr: LineCollector
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        """Wait until the server ends by itself (a signal the test sent it)
        and return its status, its stderr read to the end. Not :meth:`stop`:
        a second signal once its shutdown has begun ends it at once."""
        self.process.wait(STOP_TIMEOUT)
        self.stderr.join(STOP_TIMEOUT)
        return self.process.returncode

    def stop(self) -> int:
        """Stop the server (SIGTERM, then SIGKILL) and return its status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.stderr.join(STOP_TIMEOUT)
        return self.process.returncode


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(probe, timeout=5.0)``: poll *probe* until it returns a
    true value and return it; fail the test after *timeout* seconds."""
    return _wait_until


@pytest.fixture
def server_command() -> tuple[str, ...]:
    """The command that runs the server, without options."""
    return SERVER_COMMAND


@contextlib.contextmanager
def _spawner() -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes; each is stopped, by PID, at the end.

    Call with command-line arguments; ``-p 0`` is added unless a port is
    given, ``--no-entry-points`` unless ``entry_points=True``. Returns once
    the server has logged the address it listens on.
    """
    started: list[ServerProcess] = []

    def spawn(
        *args: str, wait: bool = True, entry_points: bool = False
    ) -> ServerProcess:
        if "-p" not in args and "--port" not in args:
            args = (*args, "-p", "0")
        if not entry_points:
            # Serve exactly the test's namespaces, not every installed egg's
            # (the appliance installs the example chat at /chat).
            args = (*args, "--no-entry-points")
        process = subprocess.Popen(
            [*SERVER_COMMAND, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = ServerProcess(process, LineCollector(process.stderr))
        started.append(server)
        server.stderr.start()
        if wait:
            match = server.stderr.wait_for(LISTENING, STARTUP_TIMEOUT)
            server.url = match.group(1)
        return server

    try:
        yield spawn
    finally:
        for server in started:
            server.stop()
            server.process.stderr.close()


@pytest.fixture
def spawn_server() -> Iterator[Callable[..., ServerProcess]]:
    """``spawn_server(*args)``: start a server process for this test (see
    :func:`_spawner`)."""
    with _spawner() as spawn:
        yield spawn


@pytest.fixture(scope="module")
def module_spawn_server() -> Iterator[Callable[..., ServerProcess]]:
    """``spawn_server`` for servers the tests of a module share (a server
    costs about 3 s to start)."""
    with _spawner() as spawn:
        yield spawn


def _database_uri() -> str:
    """The ``[database] uri`` of the trytond.conf ``TRYTOND_CONFIG`` names
    (bin/test sets it): the appliance's PostgreSQL."""
    path = os.environ.get("TRYTOND_CONFIG")
    if not path:
        pytest.skip("TRYTOND_CONFIG is not set: run the tests with bin/test")
    parser = configparser.ConfigParser(interpolation=None)
    with open(path, encoding="utf-8") as file:
        parser.read_file(file)
    return parser["database"]["uri"]


def _drop_database(uri: str, name: str) -> None:
    with psycopg.connect(uri, dbname="postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )


@pytest.fixture(scope="module")
def scratch_database(request, appliance) -> Iterator[tuple[str, str]]:
    """``(uri, name)`` of an empty database of the requesting module
    (``<--db>_outbox`` for test_outbox.py), dropped after, on the
    appliance's PostgreSQL (started if it does not run)."""
    uri = _database_uri()
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    name = f"{request.config.getoption('--db')}_{module}"
    _drop_database(uri, name)
    with psycopg.connect(uri, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield uri, name
    _drop_database(uri, name)


@pytest.fixture
def scratch_connect(scratch_database) -> Iterator[Callable[[], psycopg.Connection]]:
    """``connect()``: a new autocommit connection to ``scratch_database``,
    closed after the test."""
    uri, name = scratch_database
    opened: list[psycopg.Connection] = []

    def connect() -> psycopg.Connection:
        opened.append(psycopg.connect(uri, dbname=name, autocommit=True))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def empty_scratch(scratch_connect) -> psycopg.Connection:
    """An autocommit connection to ``scratch_database`` without outbox
    (:mod:`oe_web_socketio.outbox`): what a test creates there is new."""
    from oe_web_socketio import outbox

    conn = scratch_connect()
    conn.execute(
        f"DROP TABLE IF EXISTS {outbox.TABLE}, {outbox.TABLE}_state;"
        f"DROP SEQUENCE IF EXISTS {outbox.TABLE}_position_seq;"
        f"DROP FUNCTION IF EXISTS {outbox.POSITION_TRIGGER}"
    )
    return conn
