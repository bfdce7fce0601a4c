"""A real Tryton for tests: a database created with trytond-admin on the
appliance's PostgreSQL, and a trytond serving it on a free port.

The fixtures ``tryton_db`` and ``trytond`` of ``tests/conftest.py`` use
these helpers; tests use the fixtures. Everything talks to real parts:
PostgreSQL through psycopg, trytond through its JSON-RPC over HTTP.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .appliance import Appliance

#: Seconds trytond-admin may take to create or update a database.
ADMIN_TIMEOUT = 600.0
#: Seconds trytond has to load the database and answer a login.
STARTUP_TIMEOUT = 90.0
#: Seconds trytond has to stop after SIGTERM, then after SIGKILL.
STOP_TIMEOUT = 15.0
#: Seconds a JSON-RPC call may take.
RPC_TIMEOUT = 60.0
#: Tries to start trytond, each on a new free port (another process may
#: take the port between our probe and trytond's bind).
START_ATTEMPTS = 3

#: The time zone trytond's process is started in: far from UTC, so that a
#: comparison mixing local time and UTC fails by hours, not by nothing.
#: trytond itself switches to UTC (and PostgreSQL's session to UTC too).
TRYTOND_TZ = "Pacific/Kiritimati"

ADMIN_LOGIN = "admin"
ADMIN_EMAIL = "admin@example.com"


def database_uri(appliance: Appliance) -> str:
    """The ``[database] uri`` of the appliance's trytond.conf (no database)."""
    parser = configparser.ConfigParser(interpolation=None)
    with open(appliance.directory / "etc" / "trytond.conf", encoding="utf-8") as file:
        parser.read_file(file)
    return parser["database"]["uri"]


def run_python(script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run *script* in a new interpreter with this one's eggs, warnings as
    errors: for what must not happen in pytest's process (gevent patching
    is process-wide)."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class TrytonDatabase:
    """A Tryton database on the appliance's PostgreSQL.

    :ivar name: the database name.
    :ivar uri: the libpq URI of the appliance's server, without database.
    :ivar admin_password: the password of the user ``admin``.
    :ivar appliance: the appliance whose scripts and configuration are used.
    """

    name: str
    uri: str
    admin_password: str
    appliance: Appliance

    @property
    def trytond_conf(self) -> Path:
        return self.appliance.directory / "etc" / "trytond.conf"

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """A new connection to the database, autocommit, as the superuser:
        for tests that arrange what a client could not (age a session)."""
        return psycopg.connect(self.uri, dbname=self.name, autocommit=True, **kwargs)


def _server_connection(uri: str) -> psycopg.Connection:
    return psycopg.connect(uri, dbname="postgres", autocommit=True)


def drop_database(uri: str, name: str) -> None:
    """Drop database *name* if it exists, closing its connections."""
    with _server_connection(uri) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )


def create_database(
    appliance: Appliance, name: str, workdir: Path, admin_password: str
) -> TrytonDatabase:
    """Create database *name* (dropped first if it exists) and activate
    Tryton's base modules and ``web_socketio`` in it with trytond-admin."""
    uri = database_uri(appliance)
    drop_database(uri, name)
    with _server_connection(uri) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    passfile = workdir / "admin-password"
    passfile.write_text(admin_password + "\n")
    passfile.chmod(0o600)
    log = workdir / "trytond-admin.log"
    for args in (
        ("--all", "--email", ADMIN_EMAIL),
        ("-u", "web_socketio", "--activate-dependencies"),
    ):
        _trytond_admin(appliance, log, passfile, "-d", name, *args)
    return TrytonDatabase(name, uri, admin_password, appliance)


def _trytond_admin(appliance: Appliance, log: Path, passfile: Path, *args: str) -> None:
    with log.open("a") as output:
        output.write(f"--- trytond-admin {' '.join(args)}\n")
        output.flush()
        result = subprocess.run(
            [appliance.bin("trytond-admin"), *args],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=ADMIN_TIMEOUT,
            cwd=appliance.directory,
            env={**os.environ, "TRYTONPASSFILE": str(passfile)},
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"trytond-admin {' '.join(args)} failed ({result.returncode}):\n"
            + _tail(log)
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class RpcError(Exception):
    """trytond answered a JSON-RPC call with an error, or an HTTP error.

    :ivar status: the HTTP status (200 for a JSON-RPC error).
    :ivar error: the JSON-RPC ``error`` member, or the HTTP body.
    """

    def __init__(self, method: str, status: int, error: Any) -> None:
        self.method = method
        self.status = status
        self.error = error
        super().__init__(method, status, error)

    def __str__(self) -> str:
        return f"{self.method}: HTTP {self.status}: {self.error!r}"


@dataclasses.dataclass(frozen=True)
class Session:
    """A Tryton session, as ``common.db.login`` gave it."""

    login: str
    uid: int
    key: str = dataclasses.field(repr=False)

    @property
    def header(self) -> str:
        """``base64("login:uid:key")``: the value after ``Session `` in the
        ``Authorization`` header, and the ``session`` of our auth payload."""
        return base64.b64encode(f"{self.login}:{self.uid}:{self.key}".encode()).decode()


class Trytond:
    """A trytond process serving one database on a free port of 127.0.0.1.

    Started with the appliance's ``bin/start_tryton`` and trytond.conf, plus
    a second configuration file that moves ``[web] listen``: trytond reads
    its files after the ``TRYTOND_*`` environment, so ``TRYTOND_WEB__LISTEN``
    would lose to the appliance's ``listen``.

    trytond.conf has ``[web] num_proxies = 1``: a request's
    ``X-Forwarded-For`` is believed, so a test can log in "from" any
    address with the ``forwarded_for`` argument.

    :ivar url: ``http://127.0.0.1:<port>``.
    :ivar database: the name of the database served.
    :ivar tryton_db: the :class:`TrytonDatabase` served.
    """

    def __init__(self, tryton_db: TrytonDatabase, workdir: Path) -> None:
        self.tryton_db = tryton_db
        self.database = tryton_db.name
        self.workdir = workdir
        self.log = workdir / "trytond.log"
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: Session | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start trytond and wait until the admin can log in.

        :raises RuntimeError: it did not start; it is stopped.
        """
        try:
            for _ in range(START_ATTEMPTS):
                self._spawn(free_port())
                if self._wait_ready():
                    return
                address_taken = "Address already in use" in _tail(self.log)
                self.stop()
                if not address_taken:
                    break
        except BaseException:
            self.stop()
            raise
        raise RuntimeError(f"trytond did not start:\n{_tail(self.log)}")

    def _spawn(self, port: int) -> None:
        override = self.workdir / "listen.conf"
        override.write_text(f"[web]\nlisten = 127.0.0.1:{port}\n")
        self.url = f"http://127.0.0.1:{port}"
        appliance = self.tryton_db.appliance
        with self.log.open("a") as output:
            output.write(f"--- trytond on port {port}\n")
            output.flush()
            self.process = subprocess.Popen(
                [
                    appliance.bin("start_tryton"),
                    "-c",
                    str(self.tryton_db.trytond_conf),
                    str(override),
                    "-d",
                    self.database,
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=appliance.directory,
                env={**os.environ, "TZ": TRYTOND_TZ},
            )

    def _wait_ready(self) -> bool:
        """Poll a login until it succeeds (True), or trytond exits or the
        startup timeout passes (False)."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self._admin = self.login(ADMIN_LOGIN, self.tryton_db.admin_password)
                return True
            except (urllib.error.URLError, ConnectionError):
                # Not listening yet: it listens once the database is loaded.
                # Wait a little, waking up at once should trytond exit.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(0.1)
        return False

    def stop(self) -> None:
        """Stop trytond by its PID: SIGTERM, then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def rpc(
        self,
        method: str,
        params: list[Any],
        session: Session | None = None,
        forwarded_for: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call *method* with *params*; return its result.

        :param session: sent as ``Authorization: Session …``.
        :param forwarded_for: sent as ``X-Forwarded-For``: the client's
            address as trytond will record it.
        :raises RpcError: trytond answered an error.
        """
        request = urllib.request.Request(
            f"{self.url}/{self.database}/rpc/",
            data=json.dumps({"id": 1, "method": method, "params": params}).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        if session is not None:
            request.add_header("Authorization", f"Session {session.header}")
        if forwarded_for is not None:
            request.add_header("X-Forwarded-For", forwarded_for)
        try:
            with urllib.request.urlopen(request, timeout=RPC_TIMEOUT) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read().decode(errors="replace")
            raise RpcError(method, exc.code, body) from None
        if answer.get("error"):
            raise RpcError(method, 200, answer["error"])
        return answer["result"]

    def login(
        self, login: str, password: str, forwarded_for: str | None = None
    ) -> Session:
        """Log in with ``common.db.login``: a new session."""
        uid, key, *_ = self.rpc(
            "common.db.login",
            [login, {"password": password}, "en"],
            forwarded_for=forwarded_for,
        )
        return Session(login=login, uid=uid, key=key)

    def logout(self, session: Session) -> None:
        """Log out with ``common.db.logout``: trytond deletes the session."""
        self.rpc("common.db.logout", [], session=session)

    @property
    def admin(self) -> Session:
        """The admin's session opened when the server started."""
        assert self._admin is not None, "trytond is not started"
        return self._admin

    def create_user(self, login: str, password: str) -> int:
        """Create an active user (as admin); return its id. Tryton refuses
        passwords shorter than 8 characters or equal to the login."""
        (uid,) = self.rpc(
            "model.res.user.create",
            [[{"login": login, "name": login, "password": password}], {}],
            session=self.admin,
        )
        return uid

    def check(self, session: Session, forwarded_for: str | None = None) -> bool:
        """Whether trytond itself accepts *session* (from *forwarded_for*).

        Calls ``model.res.user.get_preferences``; trytond checks the session
        first and answers 401 or 403 when it refuses it. Beware: trytond
        deletes an expired session while checking it.
        """
        try:
            self.rpc(
                "model.res.user.get_preferences",
                [True, {}],
                session=session,
                forwarded_for=forwarded_for,
            )
        except RpcError as exc:
            if exc.status in (401, 403):
                return False
            raise
        return True


def new_password() -> str:
    """A password Tryton accepts."""
    return secrets.token_urlsafe(18)
