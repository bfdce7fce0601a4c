"""Several real-time workers behind the appliance's nginx: routing by the
session id's prefix, a worker killed under load, and a worker of another
"machine" that joins by configuration alone.

Every test here uses the appliance as built (``[settings]
socketio-workers``, two on CI's two cores) and skips when it runs one
worker. Messages are durable ones (the outbox of the appliance's
database, with positions), which reach every worker; clients are
python-socketio's, through the real nginx, over polling and WebSocket.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import requests
import socketio
from oe_web_socketio import outbox

from .appliance import Appliance
from .nginx import private_nginx, socketio_workers
from .realtime import RealtimeServer
from .tryton import database_uri, free_port

pytestmark = pytest.mark.timeout(180)

#: Seconds to wait for what should come at once.
DEADLINE = 20.0


@pytest.fixture(scope="module")
def workers(appliance: Appliance) -> dict[str, int]:
    """The appliance's workers, each up and listening to its database."""
    found = appliance.workers
    if len(found) < 2:
        pytest.skip(
            "the appliance runs one real-time worker ([settings] socketio-workers)"
        )
    for name in found:
        wait_listening(appliance, name)
    return found


@pytest.fixture(scope="module")
def session(appliance: Appliance) -> str:
    """The admin's Tryton session on the appliance's database."""
    return appliance.login()


def wait_listening(appliance: Appliance, name: str) -> None:
    deadline = time.monotonic() + 60
    state: object = "not answering"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            state = appliance.worker_health(name)["listeners"][appliance.database]
            if state["state"] == "listening":  # type: ignore[index]
                return
        time.sleep(0.2)
    raise AssertionError(f"worker {name}: {state}")


def handshake(url: str, http: requests.Session | None = None) -> str:
    """A polling handshake through *url*; the Engine.IO sid."""
    answer = (http or requests).get(
        f"{url}/socket.io/?EIO=4&transport=polling", timeout=10
    )
    assert answer.status_code == 200, answer.text
    return json.loads(answer.text[1:])["sid"]


def worker_of(sid: str) -> str:
    return sid.partition(".")[0]


def publish(
    appliance: Appliance, channel: str, *messages: object, pause: float = 0
) -> None:
    """Publish *messages* on *channel* in the appliance's database, one
    transaction each, as ERP code does, *pause* seconds apart."""
    with psycopg.connect(database_uri(appliance), dbname=appliance.database) as conn:
        conn.autocommit = True
        for message in messages:
            with conn.transaction():
                outbox.publish(conn.cursor(), message, channel)
            time.sleep(pause)


class Subscriber:
    """A python-socketio client of the root namespace through nginx,
    subscribed to a channel with ``resume``; after a disconnection it
    connects again through nginx and resumes from the last position it
    got (:meth:`reconnect`)."""

    def __init__(self, url: str, session: str, channel: str, transport: str) -> None:
        self.url, self.session, self.channel = url, session, channel
        self.transports = ["websocket"] if transport == "websocket" else ["polling"]
        self.payloads: list[object] = []
        self.last: str | None = None
        self.lock = threading.Lock()
        self.client = self._connect()
        self.resume(None)

    def _connect(self) -> socketio.Client:
        """A connected client; a refused handshake is tried again, as
        socket.io-client's reconnection would (right after a worker dies,
        nginx may answer 502 until it has failed it over)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            client = socketio.Client(reconnection=False)
            client.on("message", self._message)
            try:
                client.connect(
                    self.url,
                    transports=self.transports,
                    auth={"session": self.session},
                    wait_timeout=10,
                )
                return client
            except socketio.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _message(self, payload: object, channel: str, position: str) -> None:
        if channel == self.channel:
            with self.lock:
                self.payloads.append(payload)
                self.last = position

    @property
    def worker(self) -> str:
        return worker_of(self.client.eio.sid)

    def reconnect(self) -> None:
        """Wait until the client has seen its disconnection, then connect
        through nginx again and resume from the last position seen."""
        deadline = time.monotonic() + DEADLINE
        while self.client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client = self._connect()
        with self.lock:
            last = self.last
        self.resume(last)

    def resume(self, position: str | None) -> None:
        """Subscribe, getting what came after *position*; a resume that
        asks the client to resynchronise fails the test."""
        try:
            answer = self.client.call("resume", (position, [self.channel]), timeout=10)
        except socketio.exceptions.TimeoutError:
            raise AssertionError(
                f"no answer to resume from {self.client.eio.sid} "
                f"({self.client.eio.current_transport}, connected: "
                f"{self.client.connected}) at {time.time()}"
            ) from None
        assert "resync" not in answer, answer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()


# -- routing -------------------------------------------------------------------


def test_handshakes_from_one_address_spread_over_the_workers(appliance, workers):
    with requests.Session() as http:
        seen = {
            worker_of(handshake(appliance.url, http)) for _ in range(4 * len(workers))
        }
    assert seen == set(workers)


@pytest.mark.parametrize("under", ["", "/database"])
def test_every_request_of_a_polling_session_reaches_its_worker(
    appliance, workers, under
):
    """A session's polls and posts come back to the worker that made it:
    any other answers 400 (unknown session). The same under a database's
    path (/<db>/socket.io/, the Admin UI's)."""
    prefix = f"{appliance.url}/{appliance.database}" if under else appliance.url
    with requests.Session() as http:
        for _ in range(2 * len(workers)):
            sid = handshake(prefix, http)
            base = f"{prefix}/socket.io/?EIO=4&transport=polling&sid={sid}"
            assert http.post(base, data="40", timeout=10).text == "OK"
            connected = http.get(base, timeout=10)
            assert connected.status_code == 200 and connected.text.startswith("40{")
            for _ in range(3):
                assert http.post(base, data="3", timeout=10).status_code == 200
            assert http.post(base, data="1", timeout=10).status_code == 200


def test_a_session_upgrades_to_websocket_on_its_worker(appliance, workers, session):
    clients = []
    try:
        for _ in range(2 * len(workers)):
            client = socketio.Client(reconnection=False)
            client.connect(
                appliance.url,
                transports=["polling", "websocket"],
                auth={"session": session},
                wait_timeout=10,
            )
            clients.append(client)
        deadline = time.monotonic() + DEADLINE
        while any(c.eio.current_transport != "websocket" for c in clients):
            assert time.monotonic() < deadline, "a session did not upgrade"
            time.sleep(0.05)
        # The socket still answers once upgraded: the WebSocket reached
        # the worker that holds the session.
        for client in clients:
            assert "position" in client.call("resume", (None, []), timeout=10)
        assert {worker_of(c.eio.sid) for c in clients} == set(workers)
    finally:
        for client in clients:
            client.disconnect()


@pytest.mark.parametrize(
    "forged", ["w9.AAAAAAAAAAAAAAAAAAAAAAAA", "w0.AAAAAAAAAAAAAAAAAAAA", "w0."]
)
def test_a_forged_session_id_is_refused_cleanly(appliance, workers, forged):
    answer = requests.get(
        f"{appliance.url}/socket.io/?EIO=4&transport=polling&sid={forged}", timeout=10
    )
    assert answer.status_code == 400
    assert "session" in answer.text.lower()


def test_health_through_nginx_names_the_worker_that_answered(appliance, workers):
    with requests.Session() as http:
        answers = [http.get(f"{appliance.url}/health", timeout=10) for _ in range(8)]
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["worker"] for answer in answers} == set(workers)
    for name in workers:
        assert appliance.worker_health(name)["worker"] == name


# -- failover ------------------------------------------------------------------


def test_a_worker_killed_under_load_loses_its_clients_to_the_others(
    appliance, workers, session
):
    """SIGKILL a worker while messages are published: nginx stops sending
    to it, its clients (polling and WebSocket) connect again through nginx
    to the other and resume, each message reaching each client once, in
    order; supervisor starts the worker again and it takes new clients."""
    channel = f"failover-{time.monotonic_ns()}"
    subscribers: list[Subscriber] = []
    try:
        # Clients until a worker, the victim, holds one of each transport
        # (both orders: nginx's turns could otherwise pair them up the
        # same way each time).
        victim = None
        for attempt in range(8):
            order = ("polling", "websocket")[:: 1 if attempt % 2 else -1]
            for transport in order:
                subscribers.append(
                    Subscriber(appliance.url, session, channel, transport)
                )
            for name in workers:
                held = {s.transports[0] for s in subscribers if s.worker == name}
                if held == {"polling", "websocket"}:
                    victim = name
            if victim is not None:
                break
        assert victim is not None, [(s.worker, s.transports) for s in subscribers]
        on_victim = [s for s in subscribers if s.worker == victim]

        expected = list(range(100))
        # Twenty a second: a resume reads until no message came during its
        # last read (oe_web_socketio.resume), which a steady stream faster
        # than a read on this loaded machine would never leave it.
        publisher = threading.Thread(
            target=publish, args=(appliance, channel, *expected), kwargs={"pause": 0.05}
        )
        publisher.start()
        deadline = time.monotonic() + DEADLINE
        while len(on_victim[0].payloads) < 20:
            assert time.monotonic() < deadline, "no message before the kill"
            time.sleep(0.02)
        pid = int(
            appliance.run("supervisorctl", "pid", f"oe_web_socketio:{victim}").stdout
        )
        subprocess.run(["kill", "-KILL", str(pid)], check=True)

        for subscriber in on_victim:
            subscriber.reconnect()
            assert subscriber.worker != victim
        publisher.join(60)
        for subscriber in subscribers:
            deadline = time.monotonic() + DEADLINE
            while len(subscriber.payloads) < len(expected):
                assert time.monotonic() < deadline, (
                    f"{len(subscriber.payloads)} of {len(expected)} messages"
                )
                time.sleep(0.05)
        time.sleep(0.3)  # nothing more may come
        for subscriber in subscribers:
            assert subscriber.payloads == expected

        # supervisor starts it again, and nginx sends it new clients.
        deadline = time.monotonic() + 60
        while appliance.status().get(f"oe_web_socketio:{victim}") != "RUNNING":
            assert time.monotonic() < deadline, appliance.status()
            time.sleep(0.2)
        new_pid = int(
            appliance.run("supervisorctl", "pid", f"oe_web_socketio:{victim}").stdout
        )
        assert new_pid != pid
        wait_listening(appliance, victim)
        deadline = time.monotonic() + DEADLINE
        with requests.Session() as http:
            while worker_of(handshake(appliance.url, http)) != victim:
                assert time.monotonic() < deadline, (
                    "the restarted worker gets no client"
                )
                time.sleep(0.2)
    finally:
        for subscriber in subscribers:
            subscriber.close()


# -- a worker on another machine -------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes(
    appliance, workers, tmp_path_factory
) -> Iterator[tuple[str, RealtimeServer]]:
    """A second "machine": a worker of its own configuration file (its
    name, the appliance's database, its trusted proxies), and an nginx
    rendered from templates/nginx.conf.in with the appliance's w0 as its
    local worker and the second one in socketio-remote-workers. Yields
    nginx's URL and the second worker."""
    directory = tmp_path_factory.mktemp("node")
    node = RealtimeServer(
        appliance.directory,
        appliance.database,
        directory / "oe_web_socketio-n2.log",
        settings={"worker": "n2", "trusted_proxies": "127.0.0.1"},
    )
    values = {
        "ports:trytond": str(free_port()),  # no Tryton: / is not tested
        "ports:socketio": str(workers["w0"]),
        "settings:database": appliance.database,
        **socketio_workers(workers["w0"], "1", f"n2 127.0.0.1:{node.port}"),
    }
    try:
        with private_nginx(directory / "nginx", values) as url:
            yield url, node
    finally:
        node.stop()


def test_a_worker_of_another_machine_joins_by_configuration(
    appliance, two_nodes, session
):
    url, node = two_nodes
    assert node.health()["worker"] == "n2"
    with requests.Session() as http:
        answers = [http.get(f"{url}/health", timeout=10) for _ in range(6)]
    assert {answer.json()["worker"] for answer in answers} == {"w0", "n2"}
    channel = f"nodes-{time.monotonic_ns()}"
    subscribers: list[Subscriber] = []
    try:
        for _ in range(6):
            for transport in ("polling", "websocket"):
                subscribers.append(Subscriber(url, session, channel, transport))
            if {s.worker for s in subscribers} == {"w0", "n2"}:
                break
        assert {s.worker for s in subscribers} == {"w0", "n2"}
        publish(appliance, channel, "to both", "machines")
        for subscriber in subscribers:
            deadline = time.monotonic() + DEADLINE
            while len(subscriber.payloads) < 2:
                assert time.monotonic() < deadline, subscriber.payloads
                time.sleep(0.05)
        time.sleep(0.2)  # nothing more may come
        assert all(s.payloads == ["to both", "machines"] for s in subscribers)
    finally:
        for subscriber in subscribers:
            subscriber.close()
