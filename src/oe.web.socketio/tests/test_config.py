"""Tests of :mod:`oe_web_socketio.config`."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
from oe_web_socketio.config import DEFAULT_MESSAGE_LOG_FORMAT, Config
from oe_web_socketio.exceptions import ConfigError

pytestmark = pytest.mark.timeout(10)


def write_config(tmp_path, body: str, name: str = "oe_web_socketio.cfg") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return str(path)


def test_defaults():
    config = Config()
    assert config.databases == ("oe",)
    assert config.interface == "127.0.0.1"
    assert config.port == 8068
    assert config.max_cursor == 8
    assert config.trytond_config is None
    assert config.trusted_proxies == ("127.0.0.1", "::1")
    assert config.log_level == "INFO"
    assert config.ping_interval == 25.0
    assert config.ping_timeout == 20.0
    assert config.max_http_buffer_size == 1_000_000
    assert config.cors_allowed_origins == ()
    assert config.max_event_size == 65_536
    assert config.message_log_format == DEFAULT_MESSAGE_LOG_FORMAT
    assert config.namespaces == ()


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().port = 1  # type: ignore[misc]


def test_from_file_reads_every_key(tmp_path):
    path = write_config(
        tmp_path,
        """
        [oe_web_socketio]
        databases = oe, other
        interface = 0.0.0.0
        port = 9000
        max_cursor = 3
        trytond_config = /etc/trytond.conf
        trusted_proxies = 10.0.0.0/8, ::1
        log_level = debug
        ping_interval = 2.5
        ping_timeout = 4
        max_http_buffer_size = 2_000
        cors_allowed_origins = https://erp.example.com, http://localhost:8080
        max_event_size = 1000
        message_log_format = %(sid)s %(event)s
        namespaces = /chat=my_egg.chat:Chat, /a/b=my_egg:B
        """,
    )
    assert Config.from_file(path) == Config(
        databases=("oe", "other"),
        interface="0.0.0.0",
        port=9000,
        max_cursor=3,
        trytond_config="/etc/trytond.conf",
        trusted_proxies=("10.0.0.0/8", "::1"),
        log_level="DEBUG",
        ping_interval=2.5,
        ping_timeout=4.0,
        max_http_buffer_size=2000,
        cors_allowed_origins=("https://erp.example.com", "http://localhost:8080"),
        max_event_size=1000,
        message_log_format="%(sid)s %(event)s",
        namespaces=("/chat=my_egg.chat:Chat", "/a/b=my_egg:B"),
    )


def test_from_file_keeps_defaults_of_absent_keys_and_ignores_other_sections(
    tmp_path,
):
    path = write_config(
        tmp_path,
        """
        [database]
        uri = postgresql:///

        [oe_web_socketio]
        port = 9001
        """,
    )
    assert Config.from_file(path) == Config(port=9001)


def test_from_file_empty_values(tmp_path):
    path = write_config(
        tmp_path,
        """
        [oe_web_socketio]
        trytond_config =
        trusted_proxies =
        message_log_format =
        """,
    )
    config = Config.from_file(path)
    assert config.trytond_config is None
    assert config.trusted_proxies == ()
    assert config.message_log_format is None  # no message log


def test_the_models_and_the_long_poll_bodies_have_settings_of_their_own(tmp_path):
    # Unset, they follow what sized them before they had their own.
    config = Config(max_cursor=3, max_http_buffer_size=500)
    assert (config.orm_transactions, config.longpolling_body_limit) == (3, 500)
    path = write_config(
        tmp_path,
        "[oe_web_socketio]\nmax_cursor = 3\nmax_http_buffer_size = 500\n"
        "longpolling_transactions = 12\nlongpolling_max_body = 2000\n",
    )
    config = Config.from_file(path)
    assert (config.max_cursor, config.orm_transactions) == (3, 12)
    assert (config.max_http_buffer_size, config.longpolling_body_limit) == (500, 2000)
    path = write_config(
        tmp_path, "[oe_web_socketio]\nlongpolling_transactions = auto\n"
    )
    assert Config.from_file(path).longpolling_transactions is None
    for key in ("longpolling_transactions", "longpolling_max_body"):
        with pytest.raises(ConfigError, match="must be at least 1, got 0"):
            Config(**{key: 0})


@pytest.mark.parametrize(("value", "expected"), [("", None), ("Auto", None), ("0", 0)])
def test_max_connections_auto_follows_the_open_files_limit(tmp_path, value, expected):
    # None: derived at start (oe_web_socketio.limits.session_limit).
    assert Config().max_connections is None
    path = write_config(tmp_path, f"[oe_web_socketio]\nmax_connections = {value}\n")
    assert Config.from_file(path).max_connections == expected


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ("max_cursors = 3", "max_cursors", "unknown key (did you mean max_cursor?)"),
        ("zzz = 3", "zzz", "unknown key (known keys: databases, interface,"),
        ("port = eighty", "port", "not an integer: 'eighty'"),
        ("port = 70000", "port", "must be between 0 and 65535, got 70000"),
        ("max_cursor = 0", "max_cursor", "must be at least 1, got 0"),
        ("ping_timeout = soon", "ping_timeout", "not a number: 'soon'"),
        ("ping_timeout = nan", "ping_timeout", "not a finite number: 'nan'"),
        ("ping_interval = 0", "ping_interval", "must be a positive number"),
        (
            "session_check_interval = -1",
            "session_check_interval",
            "must be a number of seconds, 0 or more, got -1.0",
        ),
        ("databases =", "databases", "at least one database is required"),
        ("databases = a,,b", "databases", "empty item"),
        ("databases = a, a", "databases", "database listed twice: a"),
        ("databases = a/b", "databases", "a database name cannot contain '/'"),
        ("log_level = loud", "log_level", "must be one of DEBUG, INFO"),
        ("trusted_proxies = proxy", "trusted_proxies", "not an IP address"),
        (
            "cors_allowed_origins = https://x.org/path",
            "cors_allowed_origins",
            "not an origin",
        ),
        ("cors_allowed_origins = *, https://x.org", "cors_allowed_origins", "'*'"),
        ("max_event_size = 0", "max_event_size", "must be at least 1, got 0"),
        ("max_connections = -1", "max_connections", "must be at least 0, got -1"),
        ("max_connections = many", "max_connections", "not an integer: 'many'"),
        (
            "message_log_format = %(who)s",
            "message_log_format",
            "unknown field 'who' (known fields: address, namespace, sid,",
        ),
        (
            "message_log_format = %d",
            "message_log_format",
            "not a valid %-format: %d format: a real number is required",
        ),
        (
            "message_log_format = %(size)",
            "message_log_format",
            "not a valid %-format",
        ),
        ("namespaces = chat=a:B", "namespaces", "not PATH=module:Class: 'chat=a:B'"),
        ("namespaces = /chat=a.B", "namespaces", "not PATH=module:Class"),
    ],
)
def test_from_file_bad_value_names_file_and_key(tmp_path, line, key, problem):
    path = write_config(tmp_path, f"[oe_web_socketio]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        Config.from_file(path)
    assert info.value.source == path
    assert info.value.key == key
    assert str(info.value).startswith(f"{path}: {key}: {problem}")


def test_from_file_missing_file(tmp_path):
    path = str(tmp_path / "absent.cfg")
    with pytest.raises(ConfigError, match="cannot read the file: No such file"):
        Config.from_file(path)


def test_from_file_without_section(tmp_path):
    path = write_config(tmp_path, "[other]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        Config.from_file(path)
    assert str(info.value) == f"{path}: no [oe_web_socketio] section"


def test_from_file_not_ini(tmp_path):
    path = write_config(tmp_path, "port = 1\n")
    with pytest.raises(ConfigError, match=r"not a valid INI file: File contains"):
        Config.from_file(path)


def test_from_file_duplicate_key(tmp_path):
    path = write_config(tmp_path, "[oe_web_socketio]\nport = 1\nport = 2\n")
    with pytest.raises(ConfigError, match="not a valid INI file.*'port'"):
        Config.from_file(path)


def test_from_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.cfg"
    path.write_bytes("[oe_web_socketio]\ninterface = caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        Config.from_file(str(path))


def test_percent_signs_are_literal(tmp_path):
    path = write_config(tmp_path, "[oe_web_socketio]\ntrytond_config = /a%b\n")
    assert Config.from_file(path).trytond_config == "/a%b"


@pytest.mark.parametrize("worker", ["", "w0", "n-2_b", "x" * 32])
def test_worker_names_accepted(worker):
    assert Config(worker=worker).worker == worker


@pytest.mark.parametrize("worker", ["w.0", "w 0", "w/0", "é", "x" * 33, "w0\n"])
def test_worker_names_refused(worker):
    # '.' ends the name in a session id; the rest would not pass through a
    # URL's query or nginx's map as they are.
    with pytest.raises(ConfigError, match="worker: must be letters, digits"):
        Config(worker=worker)


def test_replace_returns_a_validated_copy():
    config = Config()
    assert config.replace(port=0, databases=("a", "b")) == Config(
        port=0, databases=("a", "b")
    )
    assert config.port == 8068
    with pytest.raises(ConfigError) as info:
        config.replace(max_cursor=0)
    assert (info.value.key, info.value.source) == ("max_cursor", None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"databases": ["oe"]}, "databases: must be a tuple of strings"),
        ({"port": "8068"}, "port: must be an integer"),
        ({"port": True}, "port: must be an integer"),
        ({"ping_interval": "1"}, "ping_interval: must be a number"),
        ({"trytond_config": 3}, "trytond_config: must be a string or None"),
        ({"max_connections": "9"}, "max_connections: must be an integer or None"),
        ({"max_connections": False}, "max_connections: must be an integer or None"),
        ({"log_level": "debug"}, "log_level: must be one of"),
    ],
)
def test_constructor_refuses_wrong_types(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config(**overrides)
