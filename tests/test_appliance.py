"""The appliance as an integrator meets it: the stack under supervisor,
reached through nginx by the Tryton JSON-RPC API and by Socket.IO clients."""

import base64
import json
import re
import runpy
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import socketio

from .appliance import PROGRAMS


def test_every_program_reaches_running(appliance):
    status = appliance.wait_status("RUNNING")
    workers = {f"oe_web_socketio:{name}" for name in appliance.workers}
    assert set(status) == PROGRAMS | workers
    assert workers
    assert set(status.values()) == {"RUNNING"}


def test_jsonrpc_login_through_nginx(appliance):
    user_id, key, _bus = appliance.rpc(
        "common.db.login", ["admin", {"password": appliance.admin_password}, "en"]
    )
    assert user_id == 1
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    session = base64.b64encode(f"admin:{user_id}:{key}".encode()).decode()
    assert appliance.rpc("common.db.logout", [], session) is None


def test_trytond_runs_under_gunicorn_with_its_workers(appliance):
    """trytond runs under gunicorn (``bin/tryton_wsgi``): ``trytond-workers``
    processes of ``trytond-threads`` threads each, not trytond's
    development server (a thread per request). Many requests at once are
    all answered, and no worker dies of them."""
    conf = runpy.run_path(str(appliance.directory / "etc" / "gunicorn.conf.py"))
    assert conf["worker_class"] == "gthread"
    master = int(appliance.run("supervisorctl", "pid", "trytond").stdout)
    command = Path(f"/proc/{master}/cmdline").read_bytes().split(b"\0")
    assert appliance.bin("tryton_wsgi").encode() in command

    def workers() -> list[int]:
        children = Path(f"/proc/{master}/task/{master}/children").read_text()
        return sorted(int(pid) for pid in children.split())

    before = workers()
    assert len(before) == conf["workers"]
    session = appliance.login()
    at_once = 4 * conf["workers"] * conf["threads"]
    with ThreadPoolExecutor(at_once) as clients:
        answers = list(
            clients.map(
                lambda _: appliance.rpc(
                    "model.res.user.get_preferences", [True, {}], session
                ),
                range(2 * at_once),
            )
        )
    assert len(answers) == 2 * at_once
    assert all(answer["language"] == "en" for answer in answers)
    assert workers() == before


def test_jsonrpc_login_refused_with_wrong_password(appliance):
    try:
        appliance.rpc("common.db.login", ["admin", {"password": "wrong"}, "en"])
    except urllib.error.HTTPError as error:
        assert error.code in {401, 403, 429}
    else:
        raise AssertionError("a wrong password logged in")


def _handshake(url: str, transport: str) -> tuple[str, str]:
    client = socketio.Client(reconnection=False)
    try:
        client.connect(url, transports=[transport], wait_timeout=10)
        return client.get_sid(), client.transport()
    finally:
        client.disconnect()


def test_socketio_handshake_over_websocket_through_nginx(appliance):
    sid, transport = _handshake(appliance.url, "websocket")
    assert sid
    assert transport == "websocket"


def test_socketio_handshake_over_polling_through_nginx(appliance):
    sid, transport = _handshake(appliance.url, "polling")
    assert sid
    assert transport == "polling"


def test_health_of_the_realtime_server(appliance):
    url = f"http://127.0.0.1:{appliance.socketio_port}/health"
    with urllib.request.urlopen(url, timeout=10) as response:
        health = json.load(response)
    assert health["status"] == "ok"
    assert health["databases"] == [appliance.database]


def test_start_again_on_a_running_stack_changes_nothing(appliance):
    setup_log = appliance.directory / "var" / "log" / "setup.log"
    before = setup_log.read_text() if setup_log.exists() else ""
    result = appliance.run("start", "--daemon")
    assert result.returncode == 0, result.stderr
    assert "Creating the database" not in result.stdout
    assert (setup_log.read_text() if setup_log.exists() else "") == before
    assert set(appliance.status().values()) == {"RUNNING"}


def test_stop_all_then_start_keeps_the_database(appliance):
    session = appliance.login()
    marker = f"appliance-test-{id(session)}"
    (group_id,) = appliance.rpc(
        "model.res.group.create", [[{"name": marker}], {}], session
    )

    assert appliance.run("supervisorctl", "stop", "all").returncode == 0
    assert set(appliance.wait_status("STOPPED").values()) == {"STOPPED"}
    assert appliance.run("supervisorctl", "start", "all").returncode == 0
    assert set(appliance.wait_status("RUNNING").values()) == {"RUNNING"}

    session = appliance.login()
    found = appliance.rpc(
        "model.res.group.search_read",
        [[("name", "=", marker)], 0, None, None, ["name"], {}],
        session,
    )
    assert [g["id"] for g in found] == [group_id]
    appliance.rpc("model.res.group.delete", [[group_id], {}], session)


def test_the_admin_is_not_sent_to_the_module_configuration_wizard(appliance):
    # sao runs the preferences' actions at login; while an item of the
    # wizard is open, Tryton puts the wizard first and sao hides its menu.
    admin = appliance.login()
    open_items = appliance.rpc(
        "model.ir.module.config_wizard.item.search_count",
        [[["state", "=", "open"]], {}],
        session=admin,
    )
    assert open_items == 0
    preferences = appliance.rpc("model.res.user.get_preferences", [False, {}], admin)
    assert preferences["actions"] == []


def test_the_web_socketio_module_is_activated(appliance):
    session = appliance.login()
    modules = appliance.rpc(
        "model.ir.module.search_read",
        [[("name", "=", "web_socketio")], 0, None, None, ["state"], {}],
        session,
    )
    assert [m["state"] for m in modules] == ["activated"]
