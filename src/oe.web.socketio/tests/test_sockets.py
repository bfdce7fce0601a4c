"""Tests of :mod:`oe_web_socketio.sockets`: registrations in process, entry
points and unknown paths against real server processes."""

from __future__ import annotations

import re
import subprocess
import textwrap
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oe_web_socketio.app import engine, socketio_options
from oe_web_socketio.config import Config
from oe_web_socketio.dispatcher import DispatchSettings
from oe_web_socketio.sockets import (
    ENTRY_POINT_GROUP,
    DuplicateNamespaceError,
    NamespaceError,
    Server,
    SocketIO,
    parse_query,
)
from sample_namespaces import Chat, Plugin, Rooted, session
from socketio_testing import (
    Clients,
    health,
    lines,
    raw_polling_session,
    serve_tests_dir,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sockets():
    server = Server(**socketio_options(Config()))
    return SocketIO(server, DispatchSettings())


def write_distribution(directory, entry_points):
    """A throwaway installed distribution with *entry_points* in our group."""
    dist_info = directory / "throwaway_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + textwrap.dedent(entry_points)
    )
    return directory


# --- registrations, in process


def test_add_namespace_registers_a_dispatcher(sockets, caplog):
    caplog.set_level("INFO", logger="oe_web_socketio.sockets")
    dispatcher = sockets.add_namespace("/chat", Chat)
    assert sockets.server.namespace_handlers["/chat"] is dispatcher
    assert sockets.dispatcher("/chat") is dispatcher
    assert sockets.namespaces == {"/chat": Chat}
    assert caplog.messages == [
        "Add namespace: '/chat' -> sample_namespaces.Chat (code)"
    ]


def test_the_class_path_is_the_default(sockets):
    sockets.add_namespace(None, Rooted)
    assert sockets.namespaces == {"/rooted": Rooted}


def test_a_path_registered_twice_names_both(sockets):
    sockets.add_namespace("/chat", Chat, origin="entry point chat")
    with pytest.raises(DuplicateNamespaceError) as info:
        sockets.add_namespace("/chat", Plugin, origin="command line")
    assert str(info.value) == (
        "namespace '/chat' registered twice: by sample_namespaces.Chat "
        "(entry point chat) and by sample_namespaces.Plugin (command line)"
    )
    assert info.value.existing.namespace_class is Chat
    assert info.value.duplicate.namespace_class is Plugin


@pytest.mark.parametrize("path", ["chat", "/a b", "/a,b", "/a?x", "*", "", None])
def test_invalid_paths_are_refused(sockets, path):
    with pytest.raises(NamespaceError, match="invalid namespace path"):
        sockets.add_namespace(path, Chat)


def test_only_namespace_classes_are_accepted(sockets):
    with pytest.raises(NamespaceError, match="not a subclass"):
        sockets.add_namespace("/x", object)
    with pytest.raises(NamespaceError, match="not a subclass"):
        sockets.add_namespace("/x", Chat(None, "/", "sid", None))


def test_add_namespace_spec(sockets):
    sockets.add_namespace_spec("/p=sample_namespaces:Plugin", origin="test")
    assert sockets.namespaces == {"/p": Plugin}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("sample_namespaces:Plugin", "is not PATH=module:Class"),
        ("/p=sample_namespaces", "is not module:Class"),
        ("/p=no_such_module:X", "cannot import no_such_module:X"),
        ("/p=sample_namespaces:Nope", "cannot import sample_namespaces:Nope"),
    ],
)
def test_bad_specs(sockets, spec, problem):
    with pytest.raises(NamespaceError, match=problem):
        sockets.add_namespace_spec(spec, origin="test")


def test_entry_points(sockets, tmp_path, monkeypatch):
    write_distribution(
        tmp_path,
        """\
        plugin = sample_namespaces:Plugin
        ignored-name = sample_namespaces:Rooted
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ours = {"/plugin": Plugin, "/rooted": Rooted}
    # Other installed eggs may add theirs (the appliance's example chat).
    loaded = [path for path in sockets.load_entry_points() if path in ours]
    assert loaded == ["/rooted", "/plugin"]  # sorted by name
    assert {p: c for p, c in sockets.namespaces.items() if p in ours} == ours


def test_a_broken_entry_point_is_reported(sockets, tmp_path, monkeypatch):
    write_distribution(tmp_path, "broken = no_such_module:X\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(NamespaceError, match="cannot load entry point broken"):
        sockets.load_entry_points()


def test_count_greenlets_is_zero_without_sockets(sockets):
    sockets.add_namespace("/chat", Chat)
    assert sockets.count_greenlets() == 0


# --- real servers


def test_entry_point_namespaces_are_served(spawn_server, monkeypatch, tmp_path):
    write_distribution(tmp_path, "plugin = sample_namespaces:Plugin\n")
    serve_tests_dir(monkeypatch, tmp_path)
    server = spawn_server(entry_points=True)
    assert lines(server, r"Add namespace: '/plugin' -> sample_namespaces\.Plugin", 1)
    assert lines(server, r"Add namespace: '/' -> oe_web_socketio\.namespace", 1)
    clients = Clients(server.url, "websocket")
    try:
        client = clients.connect("/plugin", auth={"session": session(1)})
        assert client.call("whoami")["uid"] == 1
    finally:
        clients.close()


def test_a_duplicate_path_stops_the_server_at_start(
    server_command, monkeypatch, tmp_path
):
    write_distribution(tmp_path, "dup = sample_namespaces:Plugin\n")
    serve_tests_dir(monkeypatch, tmp_path)
    result = subprocess.run(
        [*server_command, "-p", "0", "-n", "/dup=sample_namespaces:Chat"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "oe_web_socketio: namespace '/dup' registered twice: by "
        "sample_namespaces.Plugin (entry point dup = sample_namespaces:Plugin "
        "in throwaway-plugin) and by sample_namespaces.Chat (configuration)"
    )


def test_an_unknown_path_is_refused_with_a_reason(spawn_server, monkeypatch):
    serve_tests_dir(monkeypatch)
    server = spawn_server("-n", "/chat=sample_namespaces:Chat")
    clients = Clients(server.url, "polling")
    try:
        other = clients.connect(auth={"session": session(2)})
        refusal = clients.new("/nowhere").refused()
        assert refusal == {
            "message": "unknown namespace '/nowhere'",
            "data": {"code": "unknown_namespace"},
        }
        pattern = "Refused connection from 127.0.0.1 to unknown namespace '/nowhere'"
        assert lines(server, pattern, 1) == 1
        assert other.call("whoami")["uid"] == 2
    finally:
        clients.close()


def test_a_lone_server_makes_python_engineios_ids():
    eio = engine(Config()).eio
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", eio.generate_id())


def test_a_worker_starts_every_id_with_its_name():
    eio = engine(Config(worker="w1")).eio
    ids = {eio.generate_id() for _ in range(100)}
    assert len(ids) == 100
    # After the name, python-engineio's own id: 15 bytes, 12 random.
    assert all(re.fullmatch(r"w1\.[A-Za-z0-9_-]{20}", sid) for sid in ids)


def test_a_workers_sessions_and_sockets_carry_its_name(spawn_server, monkeypatch):
    serve_tests_dir(monkeypatch)
    server = spawn_server("-n", "/chat=sample_namespaces:Chat", "--worker", "n2")
    polling = raw_polling_session(server.url)
    try:
        assert polling.sid.startswith("n2.")
        assert polling.socket_sid.startswith("n2.")
    finally:
        polling.http.close()
    assert health(server)["worker"] == "n2"


@settings(deadline=None)  # a shared machine
@given(
    st.lists(st.text(alphabet="ab=&%+;2F \xe9", max_size=6), max_size=5).map("&".join)
)
def test_parse_query_is_parse_qs(query):
    assert parse_query(query) == urllib.parse.parse_qs(query)
