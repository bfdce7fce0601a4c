"""The official JavaScript Socket.IO client, driven from Python tests.

:class:`NodeClient` runs ``node tests/node/sio-client.mjs`` (socket.io-client
4.x, pinned by ``package.json`` and installed by ``make build``), writes it
JSON commands on stdin and reads what happens as JSON lines on stdout; see
the script for both. One process is one client with one namespace.

A reader thread appends every message to a log rather than to a queue: a
test waits for one kind of message while others arrive, and
:meth:`NodeClient.events` still lists every event received. Every wait is
bounded, and :meth:`NodeClient.close` ends the process for sure: end of input
first, then a kill by PID.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Self

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "node" / "sio-client.mjs"
# Node resolves the script's imports from the node_modules folders above it,
# whatever the working directory, so this is the one that must exist.
PACKAGE = ROOT / "node_modules" / "socket.io-client" / "package.json"

Message = dict[str, Any]


class NodeClientError(Exception):
    """The Node client is missing, failed, or answered a command with an error."""


class NodeClientTimeout(NodeClientError, TimeoutError):
    """What was waited for did not happen in time."""


class ConnectRefused(NodeClientError):
    """The client reported ``connect_error`` instead of connecting.

    :ivar message: the client's error message (empty when the server's
        refusal was not the ``{message, data}`` object the client expects).
    :ivar data: the ``data`` of the refusal, if any.
    :ivar payload: the server's refusal as sent, ``None`` when the transport
        failed (then :attr:`description` says why).
    """

    def __init__(self, report: Message):
        self.report = report
        self.message = report.get("message") or ""
        self.data = report.get("data")
        self.payload = report.get("payload")
        self.description = report.get("description")
        super().__init__(
            f"connect_error: {self.message!r} (payload {self.payload!r}, "
            f"description {self.description!r})"
        )


class NodeClient:
    """A socket.io-client in a Node process, connected to ``url``.

    Use it as a context manager: entering starts the process, which connects
    at once; leaving closes it. Connecting may fail, so entering does not
    wait: call :meth:`wait_connected`.

    :param url: the server, e.g. ``http://127.0.0.1:8080``.
    :param namespace: the namespace to connect to.
    :param transports: transports in order of preference, ``"websocket"`` and
        ``"polling"``; ``("polling", "websocket")`` starts with polling and
        upgrades.
    :param auth: the auth payload of the namespace connection (a dict).
    :param headers: extra HTTP headers of every request.
    :param query: query parameters of the handshake.
    :param reconnection: let the client reconnect after a lost connection
        (by default it never does).
    :param path: the Engine.IO endpoint.
    :param node: the ``node`` executable; by default the one on ``PATH``.
    """

    #: Seconds :meth:`close` waits for the process to exit on its own
    #: (it disconnects first) before killing it.
    close_timeout: float = 5.0
    #: Lines of the process's stderr kept for error messages.
    stderr_lines: int = 200

    def __init__(
        self,
        url: str,
        namespace: str = "/",
        transports: Iterable[str] = ("websocket",),
        auth: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        reconnection: bool = False,
        path: str = "/socket.io",
        node: str | None = None,
    ):
        self.url = url
        self.namespace = namespace
        self.transports = tuple(transports)
        self.auth = auth
        self.headers = headers
        self.query = query
        self.reconnection = reconnection
        self.path = path
        self.node = node
        self.process: subprocess.Popen | None = None
        self._messages: list[Message] = []
        self._stderr: collections.deque[str] = collections.deque(
            maxlen=self.stderr_lines
        )
        self._changed = threading.Condition()
        self._ended = False  # the process closed its stdout
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._event_cursors: dict[str, int] = {}
        self._threads: list[threading.Thread] = []

    # -- process ---------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that runs the client."""
        node = self.node or shutil.which("node")
        if not node:
            raise NodeClientError(
                "node is not on PATH: install Node.js (`make build` installs "
                "Debian's nodejs and npm when node is missing)"
            )
        if not PACKAGE.is_file():
            raise NodeClientError(
                f"socket.io-client is not installed in {ROOT / 'node_modules'}: "
                "run `make build`"
            )
        args = [
            node,
            str(SCRIPT),
            "--url",
            self.url,
            "--namespace",
            self.namespace,
            "--path",
            self.path,
            "--transports",
            ",".join(self.transports),
        ]
        for option, value in (
            ("--auth", self.auth),
            ("--extra-headers", self.headers),
            ("--query", self.query),
        ):
            if value is not None:
                args += [option, json.dumps(value)]
        if self.reconnection:
            args.append("--reconnection")
        return args

    def start(self) -> Self:
        """Start the process; it connects at once."""
        if self.process is not None:
            raise NodeClientError("the client is already started")
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        for target, stream in (
            (self._read_stdout, self.process.stdout),
            (self._read_stderr, self.process.stderr),
        ):
            thread = threading.Thread(
                target=target,
                args=(stream,),
                name=f"node-client-{self.process.pid}-{target.__name__}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> int | None:
        """End the client: end of input (it disconnects and exits), then a
        kill by PID if it is still running after :attr:`close_timeout`.

        :return: the exit status, ``None`` if never started.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            # OSError: it has just exited, the pipe is broken.
            with self._write_lock, contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(self.close_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.close_timeout)
        for thread in self._threads:
            thread.join(self.close_timeout)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def returncode(self) -> int | None:
        """The exit status, ``None`` while the process runs."""
        return None if self.process is None else self.process.poll()

    @property
    def stderr(self) -> str:
        """The last lines the process wrote on stderr."""
        with self._changed:
            return "".join(self._stderr)

    def _read_stdout(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                try:
                    message = json.loads(line)
                except ValueError:
                    message = {"type": "invalid", "line": line.rstrip("\n")}
                with self._changed:
                    self._messages.append(message)
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # closed under the thread by close()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                with self._changed:
                    self._stderr.append(line)
        except (OSError, ValueError):
            pass

    def send(self, command: Message) -> None:
        """Write one command (see the script) to the client."""
        if self.process is None:
            raise NodeClientError("the client is not started")
        line = json.dumps(command) + "\n"
        try:
            with self._write_lock:
                self.process.stdin.write(line)
                self.process.stdin.flush()
        except (OSError, ValueError) as error:
            raise NodeClientError(
                f"cannot write to the node client ({error}); "
                f"exit status {self.returncode}; stderr: {self.stderr.strip()!r}"
            ) from error

    # -- waiting ---------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """Every message received so far, in order."""
        with self._changed:
            return list(self._messages)

    def wait_for(
        self,
        match: Callable[[Message], bool],
        timeout: float = 10,
        *,
        start: int = 0,
        what: str = "a message",
    ) -> tuple[int, Message]:
        """Wait for the first message from index ``start`` that ``match``es.

        :return: its index in :attr:`messages` and the message.
        :raises NodeClientTimeout: none came within ``timeout`` seconds.
        :raises NodeClientError: the process ended without sending one.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = start
            while True:
                for index in range(seen, len(self._messages)):
                    if match(self._messages[index]):
                        return index, self._messages[index]
                seen = len(self._messages)
                if self._ended:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NodeClientTimeout(
                        f"no {what} within {timeout} s; "
                        f"last messages {self._messages[-10:]}"
                    )
                self._changed.wait(remaining)
        raise self._ended_error(what)

    def _ended_error(self, what: str) -> NodeClientError:
        """The error for a process that closed its stdout: with its exit
        status and its last words on stderr, once both are in (bounded)."""
        # One that closed its stdout but runs on shows no exit status below.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(self.close_timeout)
        for thread in self._threads:
            thread.join(self.close_timeout)
        return NodeClientError(
            f"the node client ended without {what}; exit status "
            f"{self.returncode}; messages {self.messages[-10:]}; "
            f"stderr: {self.stderr.strip()!r}"
        )

    def wait_type(self, type_: str, timeout: float = 10, start: int = 0) -> Message:
        """Wait for the first message of ``type_`` (e.g. ``"disconnect"``)."""
        return self.wait_for(
            lambda m: m.get("type") == type_,
            timeout,
            start=start,
            what=f"{type_!r} message",
        )[1]

    def wait_connected(self, timeout: float = 10) -> Message:
        """Wait until the namespace is connected.

        :return: the ``connect`` message: ``{"type": "connect", "id": sid,
            "transport": name}``.
        :raises ConnectRefused: the client reported ``connect_error``.
        """
        _, message = self.wait_for(
            lambda m: m.get("type") in {"connect", "connect_error"},
            timeout,
            what="connect or connect_error",
        )
        if message["type"] == "connect_error":
            raise ConnectRefused(message)
        return message

    def emit(
        self, event: str, *args: Any, ack: bool = True, timeout: float = 10
    ) -> list | None:
        """Emit ``event`` with ``args``.

        :param ack: ask for an acknowledgement and wait for it.
        :return: the arguments of the acknowledgement as a list, ``None``
            without ``ack``.
        """
        command_id = next(self._ids)
        with self._changed:
            start = len(self._messages)
        self.send(
            {
                "id": command_id,
                "op": "emit",
                "event": event,
                "args": list(args),
                "ack": ack,
            }
        )
        if not ack:
            return None
        _, message = self.wait_for(
            lambda m: m.get("id") == command_id and m.get("type") in {"ack", "error"},
            timeout,
            start=start,
            what=f"acknowledgement of {event!r}",
        )
        if message["type"] == "error":
            raise NodeClientError(f"emit {event!r}: {message['message']}")
        return message["args"]

    def wait_event(self, event: str, timeout: float = 10) -> list:
        """Wait for the next incoming ``event`` this method has not returned.

        :return: the event's arguments as a list.
        """
        index, message = self.wait_for(
            lambda m: m.get("type") == "event" and m.get("event") == event,
            timeout,
            start=self._event_cursors.get(event, 0),
            what=f"event {event!r}",
        )
        self._event_cursors[event] = index + 1
        return message["args"]

    def events(self, event: str) -> list[list]:
        """The arguments of every ``event`` received so far."""
        return [
            m["args"]
            for m in self.messages
            if m.get("type") == "event" and m.get("event") == event
        ]

    def disconnect(self, timeout: float = 10) -> str:
        """Disconnect the socket (the process stays, see :meth:`connect`).

        :return: the reason the client gives (``"io client disconnect"``).
        """
        with self._changed:
            start = len(self._messages)
        self.send({"op": "disconnect"})
        return self.wait_type("disconnect", timeout, start)["reason"]

    def connect(self, timeout: float = 10) -> Message:
        """Connect again after :meth:`disconnect`; return the ``connect``
        message (see :meth:`wait_connected`)."""
        with self._changed:
            start = len(self._messages)
        self.send({"op": "connect"})
        _, message = self.wait_for(
            lambda m: m.get("type") in {"connect", "connect_error"},
            timeout,
            start=start,
            what="connect or connect_error",
        )
        if message["type"] == "connect_error":
            raise ConnectRefused(message)
        return message

    def status(self, timeout: float = 10) -> Message:
        """The client's own view: ``connected``, ``sid``, ``transport``."""
        command_id = next(self._ids)
        self.send({"id": command_id, "op": "status"})
        return self.wait_for(
            lambda m: m.get("type") == "status" and m.get("id") == command_id,
            timeout,
            what="status",
        )[1]
