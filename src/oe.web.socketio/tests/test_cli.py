"""Tests of :mod:`oe_web_socketio.cli`.

Parsing and configuration are tested in this process; :func:`main` only in
child processes, since it patches the standard library for gevent.
"""

from __future__ import annotations

import errno
import re
import signal
import socket
import subprocess
import threading

import pytest
import socketio
from oe_web_socketio.cli import (
    UsageError,
    build_parser,
    listen_error_message,
    load_config,
)
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import ConfigError, ListenError

pytestmark = pytest.mark.timeout(60)

#: Seconds a server has to stop after a signal.
STOP_TIMEOUT = 10


def config_from(*argv: str) -> Config:
    return load_config(build_parser().parse_args(argv))


@pytest.fixture
def run_cli(server_command):
    """Run the command line to its end; return the completed process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*server_command, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    return run


# --- options and configuration, in process


def test_defaults_without_options():
    assert config_from() == Config()


def test_options_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "oe.cfg"
    path.write_text(
        "[oe_web_socketio]\nport = 9000\nmax_cursor = 2\ninterface = 0.0.0.0\n"
    )
    config = config_from("-c", str(path), "-p", "9001", "--max-cursor", "3")
    assert (config.port, config.max_cursor) == (9001, 3)  # options win
    assert config.interface == "0.0.0.0"  # from the file
    assert config.databases == ("oe",)  # default


def test_the_worker_is_named_on_the_command_line(tmp_path):
    path = tmp_path / "oe.cfg"
    path.write_text("[oe_web_socketio]\nworker = n2\n")
    assert config_from("-c", str(path)).worker == "n2"
    assert config_from("-c", str(path), "--worker", "w1").worker == "w1"
    with pytest.raises(ConfigError, match="worker: must be letters"):
        config_from("--worker", "w.1")


def test_every_option():
    config = config_from(
        "-d", "a,b", "--database", "c", "-i", "::1", "-p", "0",
        "--max-cursor", "4", "--log-level", "warning",
        "-n", "/a=m:A", "--namespace", "/b=m:B",
    )  # fmt: skip
    assert config == Config(
        databases=("a", "b", "c"),
        interface="::1",
        port=0,
        max_cursor=4,
        log_level="WARNING",
        namespaces=("/a=m:A", "/b=m:B"),
    )


def test_namespace_options_replace_those_of_the_file(tmp_path):
    path = tmp_path / "oe.cfg"
    path.write_text("[oe_web_socketio]\nnamespaces = /x=m:X\n")
    assert config_from("-c", str(path)).namespaces == ("/x=m:X",)
    assert config_from("-c", str(path), "-n", "/y=m:Y").namespaces == ("/y=m:Y",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "http"], "argument -p/--port: invalid int value: 'http'"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'LOUD'"),
        (["-d", "a,,b"], "argument -d/--database: empty name in 'a,,b'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_option_raises_usage_error(argv, message):
    with pytest.raises(UsageError) as info:
        build_parser().parse_args(argv)
    assert str(info.value).startswith(message)


def test_invalid_option_value_names_the_key():
    with pytest.raises(ConfigError) as info:
        config_from("--max-cursor", "0")
    assert str(info.value) == "command line: max_cursor: must be at least 1, got 0"


def test_listen_error_messages():
    in_use = ListenError("127.0.0.1", 8068, errno.EADDRINUSE, "Address in use")
    assert listen_error_message(in_use) == (
        "port 8068 on 127.0.0.1 is already in use; "
        "stop the other server or choose another port with -p"
    )
    denied = ListenError("0.0.0.0", 80, errno.EACCES, "Permission denied")
    assert listen_error_message(denied) == (
        "cannot listen on port 80 on 0.0.0.0: Permission denied; "
        "check -i/--interface and -p/--port"
    )


# --- main(), in child processes


def test_port_in_use_exits_1_with_one_line(run_cli):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("-p", str(port))
    assert result.returncode == 1
    # After the namespaces registered (INFO), one line and no traceback.
    *before, last = result.stderr.splitlines()
    assert last == (
        f"oe_web_socketio: port {port} on 127.0.0.1 is already in use; "
        "stop the other server or choose another port with -p"
    )
    assert all(
        " INFO oe_web_socketio.sockets: Add namespace" in x
        or " INFO oe_web_socketio.longpolling: Add the rule" in x
        for x in before
    )


def test_bad_config_file_exits_2_naming_file_and_key(tmp_path, run_cli):
    path = tmp_path / "oe.cfg"
    path.write_text("[oe_web_socketio]\nmax_cursors = 3\n")
    result = run_cli("-c", str(path), "-p", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"oe_web_socketio: {path}: max_cursors: unknown key (did you mean max_cursor?)"
    ]


def test_bad_option_exits_2_with_one_line(run_cli):
    result = run_cli("--port", "http")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "oe_web_socketio: argument -p/--port: invalid int value: 'http'"
    ]


def test_a_namespace_that_cannot_be_imported_exits_2_with_one_line(run_cli):
    result = run_cli("-p", "0", "--no-entry-points", "-n", "/x=no_such_module:X")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        (
            "oe_web_socketio: cannot import no_such_module:X (configuration): "
            "No module named 'no_such_module'"
        )
    ]


def test_help_exits_0(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: oe_web_socketio")


def test_logs_where_it_listens(spawn_server):
    server = spawn_server("-d", "oe,two", "-i", "127.0.0.1")
    line = next(line for line in server.stderr.lines if "Listening on" in line)
    # time, level, logger name, message
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO oe_web_socketio\.cli: "
        r"Listening on http://127\.0\.0\.1:\d+ \(databases: oe, two\)",
        line,
    )
    assert not server.url.endswith(":0")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_and_disconnects_clients(spawn_server, signum):
    server = spawn_server()
    disconnected = threading.Event()
    client = socketio.Client(reconnection=False)
    client.on("disconnect", lambda *reason: disconnected.set())
    client.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        server.process.send_signal(signum)
        assert server.process.wait(STOP_TIMEOUT) == 0
        assert disconnected.wait(STOP_TIMEOUT)
    finally:
        client.disconnect()
        # The server went away without an Engine.IO close (so that clients
        # come back): python-engineio's client leaves that WebSocket's
        # socket open, a ResourceWarning later in another test.
        ws = getattr(client.eio, "ws", None)
        if ws is not None:
            ws.shutdown()
    server.stderr.join(STOP_TIMEOUT)
    messages = [line.split(": ", 1)[-1] for line in server.stderr.lines]
    assert f"Received {signum.name}, stopping" in messages
    assert "Closing 1 client session(s)" in messages
    assert not [m for m in messages if m.startswith("Killing")]  # drained
    assert messages[-1] == "Stopped"
