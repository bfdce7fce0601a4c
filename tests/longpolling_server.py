"""Driving long-polling routes from integration tests: the server process
with a configuration of the test's own, an HTTP helper, and a TCP proxy in
front of PostgreSQL that a test can cut and restore.

The server is the appliance's ``bin/oe_web_socketio`` (its eggs, the
example routes of its entry points) with a second ``-c`` file that
replaces the appliance's: the test database, a free port, the routes of
:mod:`tests.longpolling_routes`, and the pool sizes the test wants.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .appliance import ROOT
from .realtime import RealtimeServer
from .tryton import Session, free_port


class LongPollingServer(RealtimeServer):
    """``bin/oe_web_socketio -c <test conf>`` serving *database*: a
    :class:`~tests.realtime.RealtimeServer` with a configuration file of
    the test's own.

    :param settings: more ``[oe_web_socketio]`` keys (``max_cursor``…).
    :param trytond_config: trytond's configuration (default: the
        appliance's).
    """

    def __init__(
        self,
        workdir: Path,
        database: str,
        *,
        settings: Mapping[str, Any] | None = None,
        trytond_config: Path | None = None,
    ) -> None:
        port = free_port()
        self.config = workdir / f"oe_web_socketio-{port}.conf"
        log = workdir / f"oe_web_socketio-{port}.log"
        values = {
            "databases": database,
            "interface": "127.0.0.1",
            "port": port,
            "trytond_config": trytond_config or ROOT / "etc" / "trytond.conf",
            "trusted_proxies": "127.0.0.1, ::1",
            "longpolling_modules": "tests.longpolling_routes",
            **(settings or {}),
        }
        self.config.write_text(
            "[oe_web_socketio]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        super().__init__(
            ROOT, database, log, args=("-c", str(self.config)), env=env, port=port
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def request(
        self,
        path: str,
        *,
        session: Session | None = None,
        method: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 90,
    ) -> tuple[int, dict[str, str], bytes]:
        """Call *path* (under ``/longpolling``); *params* go as a JSON body.

        :return: the status, headers and body, whatever the status.
        """
        return http(
            self.url + "/longpolling" + path,
            session=session,
            method=method,
            params=params,
            body=body,
            headers=headers,
            timeout=timeout,
        )

    def json(self, path: str, **kwargs: Any) -> Any:
        """The JSON answer of *path*, which must be ``200``."""
        status, _, body = self.request(path, **kwargs)
        assert status == 200, (status, body)
        return json.loads(body)


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


class PgProxy:
    """A TCP port that forwards each connection to PostgreSQL's Unix socket.

    :meth:`cut` closes the port and every forwarded connection (the
    database is out of reach); :meth:`restore` listens again on the same
    port.
    """

    def __init__(self, unix_socket: str) -> None:
        self.unix_socket = unix_socket
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        self._start(self._accept, listener)

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(5)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.socket(socket.AF_UNIX)
            try:
                server.connect(self.unix_socket)
            except OSError:
                client.close()
                server.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            self._start(self._pump, client, server)
            self._start(self._pump, server, client)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
