"""Driving an appliance checkout from tests: its scripts, supervisor, JSON-RPC.

An :class:`Appliance` is a built checkout (this one, or a copy made by a
test): it knows its directory and reads its ports and database from the
files the buildout rendered, so tests never repeat the configuration.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The programs of supervisor, but the real-time workers
#: (``oe_web_socketio:w0`` …, see :attr:`Appliance.workers`).
PROGRAMS = {"postgresql", "trytond", "nginx"}


#: Variables bin/test sets for itself that must not leak into an
#: appliance's scripts: TRYTOND_CONFIG would point another checkout's
#: trytond-admin at this checkout's database.
PRIVATE_VARIABLES = ("TRYTOND_CONFIG", "PYTHONPATH")


def clean_environment() -> dict[str, str]:
    """The environment to run an appliance's scripts in."""
    return {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}


@dataclass(frozen=True)
class Appliance:
    """A built appliance checkout at ``directory``.

    The Tryton sessions :meth:`login` opens are kept until
    :meth:`logout_all`: trytond checks a session against every live
    session of that user from that address, so sessions left behind by
    test runs slow every later request of the user.
    """

    directory: Path
    sessions: list[str] = field(default_factory=list, compare=False, repr=False)

    def bin(self, name: str) -> str:
        return str(self.directory / "bin" / name)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``bin/<args[0]> args[1:]`` and capture its output."""
        return subprocess.run(
            [self.bin(args[0]), *args[1:]],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            env=clean_environment(),
        )

    def _rendered(self, name: str) -> configparser.ConfigParser:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.directory / "etc" / name)
        return parser

    @property
    def http_port(self) -> int:
        nginx = (self.directory / "etc" / "nginx.conf").read_text()
        return int(re.search(r"^\s*listen (\d+);", nginx, re.MULTILINE).group(1))

    @property
    def socketio_port(self) -> int:
        return int(self._rendered("oe_web_socketio.conf")["oe_web_socketio"]["port"])

    @property
    def workers(self) -> dict[str, int]:
        """The port of each real-time worker of this machine, by name
        (``{'w0': 8068, 'w1': 8069}``), from etc/supervisord.conf."""
        conf = (self.directory / "etc" / "supervisord.conf").read_text()
        found = re.findall(r"--worker (\S+) --port (\d+)", conf)
        return {name: int(port) for name, port in found}

    def worker_log(self, name: str) -> Path:
        return self.directory / "var" / "log" / f"oe_web_socketio-{name}.log"

    def worker_health(self, name: str) -> dict:
        """The ``/health`` of worker *name*, asked directly."""
        url = f"http://127.0.0.1:{self.workers[name]}/health"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    @property
    def database(self) -> str:
        conf = self._rendered("oe_web_socketio.conf")
        return conf["oe_web_socketio"]["databases"].split(",")[0].strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_password(self) -> str:
        return (self.directory / "var" / "admin-password").read_text().strip()

    def supervisord_running(self) -> bool:
        return self.run("supervisorctl", "pid", timeout=30).returncode == 0

    def shutdown(self, timeout: float = 120) -> None:
        """Stop the stack and wait until supervisord, hence every program,
        is gone: ``supervisorctl shutdown`` returns before they stop, with
        their ports still taken."""
        self.run("supervisorctl", "shutdown", timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.supervisord_running() and time.monotonic() < deadline:
            time.sleep(0.2)

    def status(self) -> dict[str, str]:
        """The state of each supervisor program, e.g. ``{'nginx': 'RUNNING'}``."""
        out = self.run("supervisorctl", "status", timeout=30).stdout
        return dict(line.split()[:2] for line in out.splitlines() if line.strip())

    def wait_status(self, state: str, timeout: float = 60) -> dict[str, str]:
        """Wait until every program is in ``state``; return the last status."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while time.monotonic() < deadline:
            if status and all(s == state for s in status.values()):
                break
            time.sleep(0.5)
            status = self.status()
        return status

    def rpc(self, method: str, params: list, session: str | None = None):
        """Call trytond's JSON-RPC through nginx; return the result."""
        request = urllib.request.Request(
            f"{self.url}/{self.database}/rpc/",
            data=json.dumps({"id": 1, "method": method, "params": params}).encode(),
            headers={"Content-Type": "application/json"},
        )
        if session:
            request.add_header("Authorization", f"Session {session}")
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error'][0]}")
        return answer["result"]

    def login(self, login: str = "admin", password: str | None = None) -> str:
        """Log in over JSON-RPC; return the session as the web client sends it."""
        if password is None:
            password = self.admin_password
        user_id, key, *_ = self.rpc(
            "common.db.login", [login, {"password": password}, "en"]
        )
        session = base64.b64encode(f"{login}:{user_id}:{key}".encode()).decode()
        self.sessions.append(session)
        return session

    def logout_all(self) -> None:
        """End the sessions :meth:`login` opened (those still alive)."""
        while self.sessions:
            with contextlib.suppress(OSError, RuntimeError):  # ended already
                self.rpc("common.db.logout", [], self.sessions.pop())
