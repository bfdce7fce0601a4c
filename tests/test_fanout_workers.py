"""Two oe_web_socketio workers on one Tryton database behave as one server
for what crosses sockets (``broker = postgresql``, the appliance's).

Two real ``bin/oe_web_socketio`` processes share the test database;
clients are python-socketio clients (WebSocket and polling) and the Node
socket.io-client. Emits cross through PostgreSQL ``NOTIFY``
(:mod:`oe_web_socketio.pubsub.fanout`); durable messages (the outbox) are
read by each worker and reach each subscriber once; the Tryton bus is
answered by whichever worker holds the poll; a worker configured with
another broker refuses to start. The same with Redis:
``tests/test_fanout_workers_redis.py``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from oe_web_socketio import outbox

from .nodeclient import NodeClient
from .realtime import RealtimeServer, Recorder

pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).resolve().parent

#: Seconds tests wait for what should come at once.
DEADLINE = 15.0

#: The namespace of tests/worker_namespaces.py.
NAMESPACE = "/workers"

#: What every worker of these tests has besides the appliance's settings.
SETTINGS = {"namespaces": f"{NAMESPACE}=worker_namespaces:WorkersNamespace"}


def start_workers(appliance, database: str, directory: Path, settings: dict, count=2):
    """*count* workers on *database* with *settings*, listening and seeing
    each other."""
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    workers: list[RealtimeServer] = []
    try:
        for number in range(count):
            workers.append(
                RealtimeServer(
                    appliance.directory,
                    database,
                    directory / f"worker-{number}.log",
                    env=env,
                    settings={**SETTINGS, **settings},
                )
            )
        wait_for(lambda: all(ready(worker) for worker in workers), "workers ready")
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def ready(worker: RealtimeServer) -> bool:
    health = worker.health()
    listeners = health.get("listeners", {})
    fanout = health["fanout"]
    return (
        all(state["state"] == "listening" for state in listeners.values())
        and health["cluster"]["joined"]
        and (
            fanout.get("peers", True)
            and fanout.get("state", "listening") == "listening"
        )
    )


def wait_for(condition, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def workers(appliance, trytond, tmp_path_factory):
    started = start_workers(
        appliance,
        trytond.database,
        tmp_path_factory.mktemp("workers"),
        {"broker": "postgresql"},
    )
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def channel(request):
    return f"w-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


def client(worker: RealtimeServer, transport: str = "websocket") -> Recorder:
    return Recorder(worker.url, NAMESPACE, transport)


def published(worker: RealtimeServer) -> int:
    return worker.health()["fanout"]["published"]


def cross_worker_emits(workers, channel):
    """Chat, a socket told by id, a large shout: between a WebSocket client
    of the first worker and a polling client and a Node client of the
    second."""
    here = client(workers[0], "websocket")
    there = client(workers[1], "polling")
    node = NodeClient(workers[1].url, NAMESPACE, transports=("polling",)).start()
    try:
        node.wait_connected()
        for recorder in (here, there):
            assert recorder.call("subscribe", channel) is True
        assert node.emit("subscribe", channel) == [True]
        # Chat: broadcast_channel from one worker reaches the other's
        # subscribers, not the sender.
        # Twice, the same: both cross (not one notification of two).
        here.call("say", channel, "hello from 0")
        here.call("say", channel, "hello from 0")
        assert there.wait_message(lambda *a: a == ("hello from 0", channel))
        for _ in range(2):
            assert node.wait_event("message") == ["hello from 0", channel]
        node.emit("say", channel, "hello from node")
        assert here.wait_message(lambda *a: a == ("hello from node", channel))
        # send_to: a socket id held by the other worker.
        sid = there.call("whoami")
        here.call("tell", sid, "psst")
        assert there.wait_message(lambda *a: a == ("psst",))
        # Above PostgreSQL's 8,000 bytes of NOTIFY payload.
        large = "x" * 20_000
        there.call("shout", large)
        assert here.wait_message(lambda *a: a == (large,))
        assert node.wait_event("message") == [large]
        time.sleep(0.3)  # nothing more may come
        assert [m for m in here.messages() if m[0] == "hello from 0"] == []
        assert there.messages().count(("hello from 0", channel)) == 2
        assert node.events("message").count(["hello from 0", channel]) == 2
        assert [m for m in there.messages() if m == (large,)] == [(large,)]
        assert [m for m in here.messages() if m == ("psst",)] == []
    finally:
        here.disconnect()
        there.disconnect()
        node.close()


def test_emits_cross_workers(workers, channel):
    before = published(workers[0])
    cross_worker_emits(workers, channel)
    assert published(workers[0]) > before
    assert workers[1].health()["fanout"]["spilled"] == 1


def presence_events(recorder: Recorder) -> list[dict]:
    with recorder._changed:
        return [args[0] for event, args in recorder.received if event == "presence"]


def wait_presence(recorder: Recorder, predicate) -> dict:
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [e for e in presence_events(recorder) if predicate(e)]
        return bool(found)

    wait_for(seen, "a presence event")
    return found[0]


def test_presence_lists_the_sockets_of_both_workers(workers, channel):
    here = client(workers[0])
    there = client(workers[1], "polling")
    try:
        mine, theirs = here.call("whoami"), there.call("whoami")
        here.call("subscribe", channel)
        there.call("subscribe", channel)
        # The other worker's arrival, told through the broker.
        joined = wait_presence(here, lambda e: e["channel"] == channel)
        assert joined == {
            "event": "join",
            "channel": channel,
            "sid": theirs,
            "uid": None,
            "login": None,
        }
        for recorder in (here, there):
            listed = recorder.call("presence", channel)
            assert [p["sid"] for p in listed] == [mine, theirs]
        in_database = {p["sid"] for p in here.call("presence")}
        assert {mine, theirs} <= in_database
        there.disconnect()
        left = wait_presence(
            here, lambda e: e["event"] == "leave" and e["channel"] == channel
        )
        assert left["sid"] == theirs
        assert [p["sid"] for p in here.call("presence", channel)] == [mine]
    finally:
        here.disconnect()
        if there.client.connected:
            there.disconnect()


def test_a_bridge_message_reaches_each_subscriber_once(workers, tryton_db, channel):
    recorders = [client(workers[0]), client(workers[1], "polling")]
    try:
        for recorder in recorders:
            recorder.call("resume", None, [channel])
        with tryton_db.connect() as conn:
            for number in range(3):
                with conn.transaction():
                    outbox.publish(conn.cursor(), {"n": number}, channel)
        for recorder in recorders:
            recorder.wait_message(lambda *a: len(a) == 3 and a[0] == {"n": 2})
        time.sleep(0.3)  # nothing more may come
        for recorder in recorders:
            got = [m[0] for m in recorder.messages() if len(m) == 3 and m[1] == channel]
            assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    finally:
        for recorder in recorders:
            recorder.disconnect()


def test_the_tryton_bus_is_answered_by_the_worker_holding_the_poll(
    workers, trytond, tmp_path
):
    from .test_tryton_bus import erp, poll, wait_held
    from .tryton import new_password

    password = new_password()
    trytond.create_user("wk_ana", password)
    session = trytond.login("wk_ana", password)
    channel = f"client:{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        polls = [
            pool.submit(poll, worker.url, trytond.database, session, [channel])
            for worker in workers
        ]
        for worker in workers:
            wait_held(worker, trytond.database, 1)
        client_id = channel.partition(":")[2]
        erp(trytond, f"bus.notify('Posted', 'INV-7', client={client_id!r})")
        for future in polls:
            status, _headers, body = future.result(timeout=DEADLINE)
            assert status == 200
            assert json.loads(body)["message"]["body"] == "INV-7"


def test_a_worker_with_another_broker_refuses_to_start(
    appliance, workers, trytond, tmp_path
):
    with pytest.raises(RuntimeError) as refused:
        RealtimeServer(
            appliance.directory,
            trytond.database,
            tmp_path / "local.log",
            settings={"broker": "local"},
        )
    message = str(refused.value)
    assert "exited" in message
    assert "broker is 'local'" in message
    assert "'postgresql'" in message
