"""Driving oe_web_socketio from integration tests: the server process, and a
python-socketio client that records what it receives.

The server is the appliance's own ``bin/oe_web_socketio`` (its rendered
configuration: trytond.conf, trusted proxies, the example chat from its
entry point) on a free port, serving the test database.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import socketio

from .tryton import Session, free_port


def configuration(directory: Path, target: Path, settings: Mapping[str, Any]) -> Path:
    """Write to *target* the appliance's ``etc/oe_web_socketio.conf`` of
    *directory* with *settings* replaced or added; return *target*."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(directory / "etc" / "oe_web_socketio.conf")
    for key, value in settings.items():
        parser["oe_web_socketio"][key] = str(value)
    with target.open("w") as file:
        parser.write(file)
    return target


class ServerProcess:
    """A server started as a subprocess, its output appended to *log*,
    ready once :meth:`ready` succeeds; stopped (SIGTERM, then SIGKILL after
    15 s) by :meth:`stop`."""

    #: The server's name, in the errors of a start that fails.
    name = "server"

    def start(self, command: list[str], log: Path, env: dict[str, str] | None) -> None:
        """Run *command* and wait up to 30 s for :meth:`ready`."""
        self.log = log
        # The child writes to its own copy of the descriptor: the test
        # process keeps no file open for the server's life (one left to
        # the garbage collector is a ResourceWarning, an error here, in
        # whichever test it happens to fall).
        with log.open("a") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {log.read_text()[-3000:]}")
            try:
                self.ready()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within 30 s")

    def ready(self) -> None:
        """Return once the server answers; raise :class:`OSError` before."""
        raise NotImplementedError

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RealtimeServer(ServerProcess):
    """``bin/oe_web_socketio -d DB -p PORT`` of an appliance checkout."""

    name = "oe_web_socketio"

    def __init__(
        self,
        directory: Path,
        database: str,
        log: Path,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Start it; *args* are more arguments (a second ``-c`` replaces
        the appliance's configuration file), *env* its environment, *port*
        a given port (a restart on the same one), *settings* keys of the
        appliance's configuration to replace (written beside *log*)."""
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        if settings:
            config = log.with_name(f"oe_web_socketio-{self.port}.conf")
            args = ("-c", str(configuration(directory, config, settings)), *args)
        self.start(
            [
                str(directory / "bin" / "oe_web_socketio"),
                *args,
                "-d",
                database,
                "-p",
                str(self.port),
                "--log-level",
                "info",
            ],
            log,
            env,
        )

    def ready(self) -> None:
        self.health()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
            return json.load(response)

    def wait_greenlets(self, count: int, timeout: float = 10) -> int:
        """Wait until the server runs *count* socket greenlets; return the
        last count seen."""
        deadline = time.monotonic() + timeout
        seen = self.health()["greenlets"]
        while seen != count and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.health()["greenlets"]
        return seen


class Recorder:
    """A python-socketio client on one namespace that records every event."""

    def __init__(self, url: str, namespace: str, transport: str, auth=None) -> None:
        self.namespace = namespace
        self.client = socketio.Client(reconnection=False)
        self.received: list[tuple[str, tuple]] = []
        self._changed = threading.Condition()
        self.client.on("*", self._record, namespace=namespace)
        self.client.connect(
            url,
            namespaces=[namespace],
            transports=[transport],
            auth=auth,
            wait_timeout=10,
        )

    def _record(self, event: str, *args: Any) -> None:
        with self._changed:
            self.received.append((event, args))
            self._changed.notify_all()

    def call(self, event: str, *args: Any, timeout: float = 10) -> Any:
        data = args[0] if len(args) == 1 else args
        return self.client.call(event, data, namespace=self.namespace, timeout=timeout)

    def messages(self) -> list[tuple]:
        with self._changed:
            return [args for event, args in self.received if event == "message"]

    def wait_message(self, predicate, timeout: float = 10) -> tuple:
        """The first ``message`` whose arguments satisfy *predicate*."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event, args in self.received:
                    if event == "message" and predicate(*args):
                        return args
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no such message within {timeout} s; got {self.received}"
                    )
                self._changed.wait(remaining)

    def disconnect(self) -> None:
        self.client.disconnect()


def http(
    url: str,
    *,
    session: Session | None = None,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; return status, headers and body, whatever the status."""
    all_headers = dict(headers or {})
    if params is not None:
        body = json.dumps(params).encode()
        all_headers.setdefault("Content-Type", "application/json")
    if session is not None:
        all_headers["Authorization"] = f"Session {session.header}"
    request = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()
