"""The database bridge with real PostgreSQL, trytond and Socket.IO clients.

Messages are published as ERP code does (the Tryton module ``web_socketio``
in a trytond transaction) or out of band (``oe_web_socketio.outbox`` on a
connection of its own); clients are python-socketio clients of a real
``bin/oe_web_socketio``. The PostgreSQL restart runs on a private cluster
(:mod:`tests.pgcluster`), never on the appliance's.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest
import socketio
from oe_web_socketio import outbox

from .nodeclient import NodeClient
from .pgcluster import Cluster
from .realtime import RealtimeServer, Recorder
from .tryton import new_password

pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).resolve().parent

#: Seconds tests wait for what should come at once.
DEADLINE = 15.0


@pytest.fixture(scope="module")
def realtime(appliance, trytond, tmp_path_factory):
    server = RealtimeServer(
        appliance.directory,
        trytond.database,
        tmp_path_factory.mktemp("bridge") / "oe_web_socketio.log",
    )
    _wait_listening(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def users(trytond):
    sessions = []
    for name in ("ana", "ben"):
        password = new_password()
        trytond.create_user(f"br_{name}", password)
        sessions.append(trytond.login(f"br_{name}", password))
    return sessions


@pytest.fixture
def channel(request):
    """A channel of this test alone."""
    return f"t-{request.node.name[:60]}-{time.monotonic_ns()}"


def _wait_listening(server: RealtimeServer, timeout: float = DEADLINE) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        listeners = server.health()["listeners"]
        if all(state["state"] == "listening" for state in listeners.values()):
            return listeners
        if time.monotonic() > deadline:
            raise AssertionError(f"listeners not listening: {listeners}")
        time.sleep(0.05)


def client(server, session=None, namespace="/") -> Recorder:
    auth = {"session": session.header} if session is not None else None
    return Recorder(server.url, namespace, "websocket", auth=auth)


def publish(tryton_db, *messages, channel=None, **kwargs) -> None:
    """Publish *messages* out of band, one transaction each."""
    with tryton_db.connect() as conn:
        for message in messages:
            with conn.transaction():
                outbox.publish(conn.cursor(), message, channel, **kwargs)


def on(channel):
    """A predicate of ``wait_message``: a bridged message on *channel*."""
    return lambda *args: len(args) == 3 and args[1] == channel


def bridged(recorder: Recorder, channel: str) -> list[tuple]:
    return [
        args for args in recorder.messages() if len(args) == 3 and args[1] == channel
    ]


def wait_count(recorder: Recorder, channel: str, count: int) -> list[tuple]:
    deadline = time.monotonic() + DEADLINE
    while len(found := bridged(recorder, channel)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} messages on {channel}")
        time.sleep(0.02)
    return found


def position(token: str) -> int:
    return int(token.rpartition(":")[2])


# -- publishing --------------------------------------------------------------


def test_erp_commit_delivers_and_rollback_does_not(
    appliance, realtime, users, trytond, channel
):
    ana = client(realtime, users[0])
    try:
        assert ana.call("resume", None, [channel])["replayed"] == 0
        script = textwrap.dedent(
            f"""
            import warnings
            warnings.simplefilter("error")
            # trytond 8.0.12 trips over its own deprecation.
            warnings.filterwarnings("ignore", "trytond.config.config is deprecated")
            import trytond.config as config
            config.update_etc({str(trytond.tryton_db.trytond_conf)!r})
            from trytond.pool import Pool
            from trytond.transaction import Transaction
            from trytond.modules.web_socketio import publish
            db = {trytond.database!r}
            with Transaction().start(db, 0):
                Pool(db).init()
            with Transaction().start(db, 0) as transaction:
                publish({channel!r}, {{"n": "rolled back"}})
                transaction.rollback()
            with Transaction().start(db, 0):
                Outbox = Pool().get("web_socketio.outbox")
                Outbox.publish({channel!r}, {{"n": "committed"}})
            """
        )
        # The appliance's interpreter: its eggs and the Tryton modules of
        # other eggs (party, country: see [python-init]).
        result = appliance.run("python", "-c", script, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        message, name, _ = ana.wait_message(on(channel), timeout=DEADLINE)
        assert message == {"n": "committed"}
        assert name == channel
        # Delivery is in commit order: a rolled back message would have
        # come first; and nothing of it is in the outbox.
        assert [args[0] for args in bridged(ana, channel)] == [{"n": "committed"}]
        with trytond.tryton_db.connect() as conn:
            rows = conn.execute(
                f"SELECT payload::text FROM {outbox.TABLE} WHERE channel = %s",
                (channel,),
            ).fetchall()
        assert [json.loads(row[0]) for row in rows] == [{"n": "committed"}]
    finally:
        ana.disconnect()


def test_a_message_of_one_megabyte(realtime, users, tryton_db, channel):
    big = {"blob": "é" * 500_000, "tail": list(range(100))}
    assert len(json.dumps(big, ensure_ascii=False).encode()) > 1_000_000
    ana = client(realtime, users[0])
    try:
        ana.call("resume", None, [channel])
        publish(tryton_db, big, channel=channel)
        message, _, _ = ana.wait_message(on(channel), timeout=DEADLINE)
        assert message == big
    finally:
        ana.disconnect()


def test_messages_reach_only_subscribers_and_the_user_channel_only_its_user(
    realtime, users, tryton_db, channel
):
    ana, ben = client(realtime, users[0]), client(realtime, users[1])
    try:
        ana.call("resume", None, [channel, f"user:{users[0].uid}"])
        ben.call("resume", None, [])
        publish(tryton_db, {"to": "ana"}, channel=f"user:{users[0].uid}")
        publish(tryton_db, {"to": "subscribers"}, channel=channel)
        publish(tryton_db, {"to": "everyone"})
        ana.wait_message(lambda *a: len(a) == 3 and a[0] == {"to": "everyone"})
        ben.wait_message(lambda *a: len(a) == 3 and a[0] == {"to": "everyone"})
        got = [args[0] for args in ana.messages() if len(args) == 3]
        assert got == [{"to": "ana"}, {"to": "subscribers"}, {"to": "everyone"}]
        assert [args[0] for args in ben.messages() if len(args) == 3] == [
            {"to": "everyone"}
        ]
        # Positions grow with commit order.
        tokens = [args[2] for args in ana.messages() if len(args) == 3]
        assert [position(t) for t in tokens] == sorted(position(t) for t in tokens)
        assert ben.call("subscribe", f"user:{users[0].uid}")["error"]["code"] == (
            "forbidden"
        )
    finally:
        ana.disconnect()
        ben.disconnect()


def test_out_of_band_send_reaches_one_socket(realtime, users, tryton_db, channel):
    # Two sockets of the same user: only the one named gets it.
    ana, twin = client(realtime, users[0]), client(realtime, users[0])
    try:
        sid = ana.client.get_sid("/")
        with tryton_db.connect() as conn, conn.transaction():
            outbox.send(conn.cursor(), sid, {"for": "ana only"}, "/")
            outbox.send(conn.cursor(), sid, "wrong namespace", "/chat")
        publish(tryton_db, "marker", channel=None)
        ana.wait_message(lambda *args: len(args) == 3 and args[0] == "marker")
        twin.wait_message(lambda *args: len(args) == 3 and args[0] == "marker")
        assert [a[:2] for a in ana.messages() if len(a) == 3] == [
            ({"for": "ana only"}, None),
            ("marker", None),
        ]
        assert [a[:2] for a in twin.messages() if len(a) == 3] == [("marker", None)]
    finally:
        ana.disconnect()
        twin.disconnect()


def test_a_slow_transaction_that_commits_last_is_delivered_last(
    realtime, users, tryton_db, channel
):
    ana = client(realtime, users[0])
    try:
        start = ana.call("resume", None, [channel])["position"]
        with tryton_db.connect() as slow, tryton_db.connect() as fast:
            slow.execute("BEGIN")
            outbox.publish(slow.cursor(), "slow, begun first", channel)
            with fast.transaction():
                outbox.publish(fast.cursor(), "fast, committed first", channel)
            ana.wait_message(on(channel))
            slow.execute("COMMIT")
        found = wait_count(ana, channel, 2)
        assert [args[0] for args in found] == [
            "fast, committed first",
            "slow, begun first",
        ]
        assert position(found[0][2]) < position(found[1][2])
    finally:
        ana.disconnect()
    # A client resuming from before both gets them in the same order.
    ben = client(realtime, users[0])
    try:
        answer = ben.call("resume", start, [channel])
        assert answer["replayed"] == 2
        assert [args[0] for args in wait_count(ben, channel, 2)] == [
            "fast, committed first",
            "slow, begun first",
        ]
    finally:
        ben.disconnect()


def publish_burst(tryton_db, channel: str, together: int, apart: int) -> list:
    """*together* messages in one transaction, then *apart* more, one
    transaction each, back to back (their notifications arrive together
    while the listener delivers): ``[0, 1, …]``, in commit order."""
    with tryton_db.connect() as conn:
        with conn.transaction():
            for number in range(together):
                outbox.publish(conn.cursor(), number, channel)
        for number in range(together, together + apart):
            with conn.transaction():
                outbox.publish(conn.cursor(), number, channel)
    return list(range(together + apart))


def assert_once_in_order(found: list[tuple], expected: list) -> list[int]:
    """*found* is *expected*, once each, in order, with positions that
    increase; return the positions."""
    assert [args[0] for args in found] == expected
    positions = [position(args[2]) for args in found]
    assert positions == sorted(set(positions))
    return positions


def test_a_burst_reaches_every_subscriber_once_in_order(
    realtime, users, tryton_db, channel
):
    with tryton_db.connect() as conn:
        # The outbox of the module positions rows at commit: what this
        # module tests is that path.
        assert conn.execute(outbox.POSITIONS_AT_COMMIT).fetchone() == (True,)
    recorders = [client(realtime, users[n % 2]) for n in range(3)]
    try:
        for recorder in recorders:
            recorder.call("resume", None, [channel])
        expected = publish_burst(tryton_db, channel, 50, 50)
        seen = []
        for recorder in recorders:
            wait_count(recorder, channel, len(expected))
        time.sleep(0.2)  # nothing more may come
        for recorder in recorders:
            seen.append(assert_once_in_order(bridged(recorder, channel), expected))
        # Every subscriber saw the same positions; those of the transaction
        # of 50 follow each other.
        assert seen[0] == seen[1] == seen[2]
        assert seen[0][49] - seen[0][0] == 49
    finally:
        for recorder in recorders:
            recorder.disconnect()


def test_a_resume_in_the_middle_of_a_batch_gets_the_rest_once(
    realtime, users, tryton_db, channel
):
    ana = client(realtime, users[0])
    ben = None
    try:
        ana.call("resume", None, [channel])
        expected = publish_burst(tryton_db, channel, 20, 0)
        found = wait_count(ana, channel, 20)
        middle = found[9][2]
        ben = client(realtime, users[1])
        answer = ben.call("resume", middle, [channel])
        assert answer["replayed"] == 10
        publish(tryton_db, "live", channel=channel)
        wait_count(ben, channel, 11)
        time.sleep(0.2)  # nothing more may come
        assert_once_in_order(bridged(ben, channel), [*expected[10:], "live"])
    finally:
        ana.disconnect()
        if ben is not None:
            ben.disconnect()


def test_two_servers_on_one_database_agree_on_positions(
    appliance, realtime, users, tryton_db, channel, tmp_path
):
    """Positions are the database's: two servers deliver the same ones,
    and a client resumes on one from a position the other sent it."""
    other = RealtimeServer(appliance.directory, tryton_db.name, tmp_path / "log")
    recorders = []
    try:
        _wait_listening(other)
        recorders = [client(realtime, users[0]), client(other, users[1])]
        for recorder in recorders:
            recorder.call("resume", None, [channel])
        # Two publishers at once, as two ERP workers.
        threads = [
            threading.Thread(
                target=publish_burst, args=(tryton_db, f"{channel}-{n}", 10, 10)
            )
            for n in range(2)
        ]
        for thread in threads:
            thread.start()
        expected = publish_burst(tryton_db, channel, 10, 10)
        for thread in threads:
            thread.join(DEADLINE)
        for recorder in recorders:
            wait_count(recorder, channel, len(expected))
        time.sleep(0.2)  # nothing more may come
        here, there = (bridged(recorder, channel) for recorder in recorders)
        assert_once_in_order(here, expected)
        assert [args[2] for args in there] == [args[2] for args in here]
        # The second client leaves the other server mid-batch and resumes here.
        recorders[1].disconnect()
        recorders[1] = client(realtime, users[1])
        answer = recorders[1].call("resume", there[4][2], [channel])
        assert answer["replayed"] == len(expected) - 5
        wait_count(recorders[1], channel, len(expected) - 5)
        assert bridged(recorders[1], channel) == here[5:]
    finally:
        for recorder in recorders:
            recorder.disconnect()
        other.stop()


# -- recovery ----------------------------------------------------------------


def test_a_client_that_missed_100_messages_gets_each_once_in_order(
    realtime, users, tryton_db, channel
):
    ana = client(realtime, users[0])
    ana.call("resume", None, [channel])
    publish(tryton_db, 0, channel=channel)
    _, _, last = ana.wait_message(on(channel))
    ana.disconnect()
    publish(tryton_db, *range(1, 101), channel=channel)
    # The same client object connecting again, and a new one.
    ana.client.connect(
        realtime.url,
        namespaces=["/"],
        transports=["websocket"],
        auth={"session": users[0].header},
        wait_timeout=10,
    )
    other = client(realtime, users[0])
    try:
        for recorder in (ana, other):
            answer = recorder.call("resume", last, [channel])
            assert answer["replayed"] == 100
            assert position(answer["position"]) >= position(last) + 100
        publish(tryton_db, 101, channel=channel)
        for recorder, before in ((ana, 1), (other, 0)):
            found = wait_count(recorder, channel, before + 101)
            time.sleep(0.3)  # nothing more may come
            found = bridged(recorder, channel)
            assert [args[0] for args in found[before:]] == list(range(1, 102))
            positions = [position(args[2]) for args in found]
            assert positions == sorted(set(positions))
    finally:
        ana.disconnect()
        other.disconnect()


def test_positions_that_cannot_be_resumed_are_told_to_resync(
    realtime, users, tryton_db, channel
):
    ana = client(realtime, users[0])
    try:
        now = ana.call("resume", None, [channel])["position"]
        epoch = now.rpartition(":")[0]
        cases = {
            "garbage": "not a position",
            12: "not a position",
            f"00000000-0000-0000-0000-000000000000:{position(now)}": (
                "a position of another database"
            ),
            f"{epoch}:{position(now) + 1_000_000}": "a position from the future",
        }
        for token, reason in cases.items():
            answer = ana.call("resume", token, [channel])
            assert answer == {"resync": True, "reason": reason, "position": now}
        # Still subscribed, still served.
        publish(tryton_db, "after", channel=channel)
        assert ana.wait_message(on(channel))[0] == "after"
    finally:
        ana.disconnect()
    log = realtime.log.read_text()
    assert "must resynchronise: a position from the future" in log


def test_bad_notifications_are_skipped_and_the_listener_goes_on(
    realtime, users, tryton_db, channel
):
    ana = client(realtime, users[0])
    try:
        ana.call("resume", None, [channel])
        with tryton_db.connect() as conn:
            conn.execute("SELECT pg_notify(%s, 'not ours')", (outbox.NOTIFY_CHANNEL,))
            with conn.transaction():
                # A message deleted before its transaction commits.
                outbox.publish(conn.cursor(), "vanished", channel)
                conn.execute(
                    f"DELETE FROM {outbox.TABLE} WHERE channel = %s", (channel,)
                )
        publish(tryton_db, "still delivered", channel=channel)
        assert ana.wait_message(on(channel))[0] == "still delivered"
        assert [args[0] for args in bridged(ana, channel)] == ["still delivered"]
    finally:
        ana.disconnect()
    log = realtime.log.read_text()
    assert "that is not ours: 'not ours'" in log
    assert "(deleted before delivery?)" in log
    assert realtime.health()["listeners"][tryton_db.name]["failures"] == 0


def test_the_listener_reconnects_when_its_backend_is_terminated(
    realtime, users, tryton_db, channel
):
    ana = client(realtime, users[0])
    try:
        ana.call("resume", None, [channel])
        with tryton_db.connect() as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = %s",
                (tryton_db.name, "oe_web_socketio listener"),
            ).fetchall()
            assert killed == [(True,)]
            # Committed while nobody listens.
            with conn.transaction():
                outbox.publish(conn.cursor(), "while away", channel)
        publish(tryton_db, "after", channel=channel)
        found = wait_count(ana, channel, 2)
        assert [args[0] for args in found] == ["while away", "after"]
        health = _wait_listening(realtime)[tryton_db.name]
        assert health["failures"] >= 1
    finally:
        ana.disconnect()


class ResumingClient:
    """python-socketio's client as an application would use it: with
    ``reconnection=True``, it emits ``resume`` with the last position it
    saw on every connection, and records each bridged message of *channel*
    and each disconnection's reason."""

    def __init__(self, url: str, session, channel: str, transport: str) -> None:
        self.channel = channel
        # Short delays: the test waits for the reconnection, not the defaults.
        self.client = socketio.Client(
            reconnection=True, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.received: list[tuple] = []
        self.answers: list[dict] = []
        self.reasons: list[str] = []
        self._lock = threading.Lock()
        self.client.on("connect", self._resume)
        self.client.on("disconnect", self._disconnected)
        self.client.on("message", self._message)
        self.client.connect(
            url,
            transports=[transport],
            auth={"session": session.header},
            wait_timeout=10,
        )

    def _resume(self) -> None:
        with self._lock:
            last = self.received[-1][2] if self.received else None
        self.client.emit("resume", (last, [self.channel]), callback=self.answers.append)

    def _disconnected(self, reason: str) -> None:
        self.reasons.append(reason)
        # python-engineio 4.15.1 leaves the socket of a lost WebSocket open
        # (a ResourceWarning once the reconnection drops it): close it. Not
        # on disconnect(), whose read loop still waits on it.
        ws = getattr(self.client.eio, "ws", None)
        if reason == self.client.reason.TRANSPORT_ERROR and ws is not None:
            ws.shutdown()

    def _message(self, *args) -> None:
        if len(args) == 3 and args[1] == self.channel:
            with self._lock:
                self.received.append(args)

    def messages(self) -> list:
        with self._lock:
            return [args[0] for args in self.received]


def _node_messages(node: NodeClient, channel: str) -> list[list]:
    return [args for args in node.events("message") if args[1:2] == [channel]]


def _wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_clients_reconnect_and_resume_by_themselves_across_a_graceful_restart(
    appliance, users, tryton_db, channel, tmp_path
):
    """SIGTERM ends the sessions as a lost transport, not as a server's
    disconnect: python-socketio's client and the plain socket.io-client,
    with reconnection on, come back to the server started again on the
    same port and, resuming, get every message once, in order."""
    log = tmp_path / "restarted.log"
    first = RealtimeServer(appliance.directory, tryton_db.name, log)
    clients: list[ResumingClient] = []
    nodes: list[NodeClient] = []
    second = None
    try:
        _wait_listening(first)
        for transport in ("websocket", "polling"):
            clients.append(ResumingClient(first.url, users[0], channel, transport))
            node = NodeClient(
                first.url,
                transports=(transport,),
                auth={"session": users[1].header},
                reconnection=True,
            ).start()
            nodes.append(node)
            node.wait_connected()
            node.emit("resume", None, [channel])
        _wait(lambda: all(c.answers for c in clients), "the first resume")
        publish(tryton_db, *range(5), channel=channel)
        _wait(
            lambda: all(len(_node_messages(n, channel)) == 5 for n in nodes),
            "live messages",
        )
        # Published while the server stops, then while it is down.
        publisher = threading.Thread(
            target=publish, args=(tryton_db, *range(5, 10)), kwargs={"channel": channel}
        )
        publisher.start()
        first.stop()
        publisher.join()
        publish(tryton_db, *range(10, 15), channel=channel)
        second = RealtimeServer(
            appliance.directory, tryton_db.name, log, port=first.port
        )
        for node in nodes:
            # The reconnected socket resumes from the last position it saw.
            start = node.wait_for(lambda m: m.get("type") == "disconnect")[0]
            node.wait_for(lambda m: m.get("type") == "connect", 60, start=start)
            last = _node_messages(node, channel)[-1][2]
            (answer,) = node.emit("resume", last, [channel])
            assert "resync" not in answer, answer
        _wait(lambda: all(len(c.answers) == 2 for c in clients), "the resume")
        publish(tryton_db, *range(15, 20), channel=channel)
        expected = list(range(20))
        _wait(
            lambda: (
                all(len(c.messages()) >= 20 for c in clients)
                and all(len(_node_messages(n, channel)) >= 20 for n in nodes)
            ),
            "every message",
            DEADLINE,
        )
        for client in clients:
            assert client.messages() == expected
            assert "resync" not in client.answers[1], client.answers
            # A transport lost (reconnecting), not the server's disconnect.
            assert client.reasons == [client.client.reason.TRANSPORT_ERROR]
        for node in nodes:
            assert [args[0] for args in _node_messages(node, channel)] == expected
            disconnects = [
                m["reason"] for m in node.messages if m.get("type") == "disconnect"
            ]
            assert len(disconnects) == 1, disconnects
            assert disconnects[0] in ("transport close", "transport error")
        assert "Traceback" not in log.read_text()
    finally:
        for client in clients:
            client.client.disconnect()
        for node in nodes:
            node.close()
        if second is not None:
            second.stop()
        elif first.process.poll() is None:
            first.stop()


def test_past_the_retention_window_clients_resync(
    appliance, realtime, users, tryton_db, channel, tmp_path
):
    publish(tryton_db, "first", channel=channel)
    # Positioned by the module's server, which listens all along.
    deadline = time.monotonic() + DEADLINE
    with tryton_db.connect() as conn:
        while True:
            (first,) = conn.execute(
                f"SELECT position FROM {outbox.TABLE} WHERE channel = %s", (channel,)
            ).fetchone()
            if first is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        (epoch,) = conn.execute(outbox.STATE).fetchone()[:1]
    assert first is not None
    publish(tryton_db, *range(5), channel=channel)
    # A server keeping 3 messages; it prunes when it connects.
    server = RealtimeServer(
        appliance.directory,
        tryton_db.name,
        tmp_path / "log",
        settings={"history_max_count": 3},
    )
    try:
        _wait_listening(server)
        ana = client(server, users[0])
        answer = ana.call("resume", outbox.format_position(epoch, first), [channel])
        assert answer["resync"] is True
        assert answer["reason"] == "past the retention window"
        ana.disconnect()
    finally:
        server.stop()


# -- adapters ------------------------------------------------------------------


def test_adapter_notices_come_again_until_acknowledged(realtime, users, tryton_db):
    ana, ben = users
    received: list[list] = []
    sio = socketio.Client(reconnection=False)

    @sio.on("notices", namespace="/notices")
    def notices(data):
        received.append(data)
        # python-socketio always acknowledges: false says "offer again",
        # which the first notice gets.
        return len(received) > 1

    def wait_received(count):
        deadline = time.monotonic() + DEADLINE
        while len(received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return [[notice["text"] for notice in batch] for batch in received]

    sio.connect(
        realtime.url,
        namespaces=["/notices"],
        transports=["websocket"],
        auth={"session": ana.header},
        wait_timeout=10,
    )
    try:
        # Wait for the push greenlet to listen.
        assert realtime.wait_greenlets(1) >= 1
        publish(tryton_db, {"to": [ben.uid], "text": "for ben"}, channel="notices")
        publish(tryton_db, {"to": [ana.uid], "text": "for ana"}, channel="notices")
        assert wait_received(2) == [["for ana"], ["for ana"]]
        assert received[0] == received[1]
        publish(tryton_db, {"to": "all", "text": "for all"}, channel="notices")
        assert wait_received(3) == [["for ana"], ["for ana"], ["for all"]]
        time.sleep(0.3)  # acknowledged: nothing comes again
        assert len(received) == 3
    finally:
        sio.disconnect()


# -- PostgreSQL restarted ------------------------------------------------------


@pytest.fixture
def cluster():
    cluster = Cluster()
    cluster.init()
    cluster.start()
    yield cluster
    cluster.remove()


def test_postgresql_restarted_mid_stream_loses_no_committed_message(
    appliance, cluster, tmp_path
):
    database = "bridge_restart"
    cluster.create_database(database)
    # What the Tryton module does when it is activated.
    with (
        psycopg.connect(cluster.uri(database), autocommit=True) as conn,
        conn.transaction(),
    ):
        outbox.ensure_schema(conn.cursor())
    (tmp_path / "trytond.conf").write_text(f"[database]\nuri = {cluster.uri()}\n")
    (tmp_path / "oe_web_socketio.conf").write_text(
        "[oe_web_socketio]\n"
        f"databases = {database}\n"
        f"trytond_config = {tmp_path / 'trytond.conf'}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    server = RealtimeServer(
        appliance.directory,
        database,
        tmp_path / "server.log",
        args=(
            "-c",
            str(tmp_path / "oe_web_socketio.conf"),
            "--no-entry-points",
            "-n",
            "/=bridge_namespaces:OpenNamespace",
        ),
        env=env,
    )
    recorder = None
    try:
        _wait_listening(server)
        recorder = client(server)
        assert recorder.call("resume", None, ["stream"])["replayed"] == 0
        committed = []
        restarted = False
        for number in range(60):
            if number == 20:
                cluster.restart()
                restarted = True
            try:
                with (
                    psycopg.connect(cluster.uri(database), autocommit=True) as conn,
                    conn.transaction(),
                ):
                    outbox.publish(conn.cursor(), number, "stream")
                committed.append(number)
            except psycopg.OperationalError:
                continue
        assert restarted and len(committed) >= 50
        wait_count(recorder, "stream", len(committed))
        time.sleep(0.3)
        assert [args[0] for args in bridged(recorder, "stream")] == committed
        health = _wait_listening(server)[database]
        assert health["failures"] >= 1
    finally:
        if recorder is not None:
            recorder.disconnect()
        server.stop()
