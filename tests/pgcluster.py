"""A private PostgreSQL cluster for tests that stop and restart it.

The appliance's cluster serves every other test: a test that restarts
PostgreSQL gets a cluster of its own, under ``var/tests/`` (PostgreSQL
refuses to run as root: as root, it runs as the user ``postgres``, which
must be able to reach that directory), listening on a Unix socket only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg

from .appliance import ROOT
from .tryton import free_port

#: The user PostgreSQL runs as when the tests run as root.
RUN_AS = "postgres"


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class Cluster:
    """``initdb``, ``pg_ctl start``/``restart``/``stop`` of a cluster in
    ``var/tests/pg-<id>``, superuser ``postgres``, trust authentication."""

    def __init__(self) -> None:
        self.directory = ROOT / "var" / "tests" / f"pg-{uuid.uuid4().hex[:8]}"
        self.data = self.directory / "data"
        self.sockets = self.directory / "run"
        self.log = self.directory / "postgresql.log"
        self.port = free_port()
        self.bin = _pg_bin()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            self._prefix = [
                "setpriv",
                f"--reuid={RUN_AS}",
                f"--regid={RUN_AS}",
                "--init-groups",
            ]

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self._prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}"
            )

    def init(self) -> None:
        for path in (self.directory, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
            if self._prefix:
                shutil.chown(path, RUN_AS, RUN_AS)
        self._run(
            str(self.bin / "initdb"),
            f"--pgdata={self.data}",
            "--username=postgres",
            "--auth-local=trust",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )

    def _ctl(self, *args: str) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            *args,
            f"--pgdata={self.data}",
            f"--log={self.log}",
            "--wait",
            "--timeout=60",
            "-o",
            f"-k {self.sockets} -p {self.port} -c listen_addresses=''",
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "--mode=fast")

    def stop(self) -> None:
        self._ctl("stop", "--mode=fast")

    def uri(self, database: str = "") -> str:
        """The libpq URI of *database* (none: the server)."""
        return f"postgresql://postgres@/{database}?host={self.sockets}&port={self.port}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
