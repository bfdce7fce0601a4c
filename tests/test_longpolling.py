"""Long-polling routes against the real parts: trytond's models in the
gevent server, Tryton sessions, PostgreSQL, and the appliance's nginx.

The server under test is ``bin/oe_web_socketio`` serving the test database
(``--db``) with the routes of :mod:`tests.longpolling_routes`; sessions come
from a real trytond (fixture ``trytond``). Waiting and concurrency are
proven by order and overlap (the database's own clock, ``pg_stat_activity``),
never by how long something took.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oe_web_socketio import outbox

from .appliance import ROOT
from .longpolling_server import LongPollingServer
from .realtime import http
from .tcpproxy import TcpProxy
from .tryton import Session, Trytond, free_port

#: Cursors of the main server under test.
MAX_CURSOR = 8
#: Seconds a handler of the main server may wait.
TIMEOUT = 2

#: The connections of the server's models in pg_stat_activity.
ORM_APPLICATION = "oe_web_socketio/orm"

#: The script that drives js/longpolling.js.
JS_CLIENT = ROOT / "tests" / "node" / "longpolling-client.mjs"


@pytest.fixture(scope="module")
def server(tryton_db, tmp_path_factory) -> Iterator[LongPollingServer]:
    server = LongPollingServer(
        tmp_path_factory.mktemp("longpolling"),
        tryton_db.name,
        settings={
            "max_cursor": MAX_CURSOR,
            # Long enough for 200 handlers of 0.5 s on MAX_CURSOR cursors.
            "pool_timeout": 60,
            "longpolling_timeout": TIMEOUT,
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def user(trytond: Trytond) -> Session:
    """A user without any group."""
    password = "lp-user-password-1"
    trytond.create_user("lp_user", password)
    return trytond.login("lp_user", password)


@pytest.fixture(scope="module")
def admin(trytond: Trytond) -> Session:
    return trytond.admin


def orm_backends(tryton_db, states: tuple[str, ...]) -> list[tuple]:
    """The server's model connections to the test database in *states*."""
    with tryton_db.connect() as conn:
        return conn.execute(
            "SELECT pid, state, query FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s AND state = ANY(%s)",
            (tryton_db.name, ORM_APPLICATION, list(states)),
        ).fetchall()


def wait_for(probe, timeout: float = 15.0, what: str = "condition"):
    """Call *probe* until it returns a true value; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s (last: {value!r})")
        time.sleep(0.05)


# -- routes, modes, users ------------------------------------------------------


def test_each_rule_is_logged_at_start(server):
    log = server.log_text()
    for rule in (
        "echo:/longpolling/t/echo/<word>",
        "whoami:/longpolling/t/whoami/<int:times>",
        "whoami:/longpolling/t/whoami",
        # An egg's routes, through the entry point group.
        "hello:/longpolling/example/hello/<name>",
    ):
        assert f"Add the rule: {rule!r}" in log


def test_json_route_anonymous_has_no_uid_nor_context(server):
    data = server.json("/t/echo/hi?x=1", params={"n": 2})
    assert data == {
        "word": "hi",
        "params": {"x": "1", "n": 2},
        "uid": None,
        "context": {},
    }


def test_json_route_authenticated_has_the_users_uid_and_context(server, user):
    data = server.json("/t/echo/hi", session=user)
    assert data["uid"] == user.uid
    assert data["context"]["language"] == "en"


def test_models_are_read_as_the_user(server, user):
    data = server.json("/t/whoami/3", session=user)
    assert data == {
        "uid": user.uid,
        "login": "lp_user",
        "name": "lp_user",
        "language": "en",
        "times": 3,
    }


def test_query_parameters_take_the_handlers_types(server, user):
    """``whoami(request, times: int = 1)``: the query's text is an int, or
    the request is refused before the handler runs."""
    assert server.json("/t/whoami?times=2", session=user)["times"] == 2
    status, _, body = server.request("/t/whoami?times=abc", session=user)
    assert (status, json.loads(body)) == (
        400,
        {"error": "parameter 'times' must be an integer"},
    )


def test_http_mode_anonymous_and_authenticated(server, user):
    status, headers, body = server.request("/t/text/bob")
    assert (status, headers["Content-Type"], body) == (
        200,
        "text/plain; charset=utf-8",
        b"hello bob",
    )
    status, _, body = server.request("/t/whoami_http", session=user)
    assert (status, body) == (200, b"lp_user")
    assert server.request("/t/whoami_http")[0] == 401


def test_the_tryton_session_cookie_authenticates(server, user):
    cookie = f"tryton_session={user.login}:{user.uid}:{user.key}"
    status, _, body = server.request("/t/whoami", headers={"Cookie": cookie})
    assert status == 200
    assert json.loads(body)["uid"] == user.uid


def test_access_rights_are_the_users(server, user, admin):
    # ir.error is readable by administrators only.
    assert server.json("/t/count/ir.error", session=user) == {"denied": "AccessError"}
    assert "count" in server.json("/t/count/ir.error", session=admin)


@pytest.mark.parametrize("route", ["/t/whoami", "/t/whoami_http", "/t/sleep"])
def test_routes_that_need_a_user_refuse_anonymous_clients(server, route):
    status, headers, _ = server.request(route)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Session"


def test_forged_logged_out_and_rebound_sessions_are_refused(server, trytond, user):
    forged = Session(user.login, user.uid, "0" * 64)
    assert server.request("/t/whoami", session=forged)[0] == 401
    elsewhere = trytond.login("lp_user", "lp-user-password-1", forwarded_for="10.9.9.9")
    assert server.request("/t/whoami", session=elsewhere)[0] == 401
    gone = trytond.login("lp_user", "lp-user-password-1")
    assert server.request("/t/whoami", session=gone)[0] == 200
    trytond.logout(gone)
    assert server.request("/t/whoami", session=gone)[0] == 401


def test_models_unauthenticated_raise_authentication_error(server):
    status, _, body = server.request("/t/anon_model")
    assert (status, json.loads(body)) == (
        401,
        {"error": "the models need an authenticated user"},
    )


@pytest.mark.parametrize("how", ["orm", "sql"])
def test_writes_are_refused_and_nothing_changes(server, trytond, admin, user, how):
    """The administrator may rename a user, but not from a handler."""
    data = server.json(
        "/t/write",
        session=admin,
        params={"how": how, "name": "Renamed", "target": user.uid},
    )
    # 25006: read_only_sql_transaction.
    assert data == {"refused": "ReadOnlySqlTransaction", "sqlstate": "25006"}
    (record,) = trytond.rpc(
        "model.res.user.read", [[user.uid], ["name"], {}], session=admin
    )
    assert record["name"] == "lp_user"


def test_readers_see_what_trytond_changed_as_soon_as_it_commits(
    server, trytond, tryton_db, user, admin
):
    """The user's groups are cached by trytond in the server's process: a
    change made behind trytond's back stays unseen; one made through trytond
    clears the cache there too (``[cache] clean_timeout = 0``)."""
    groups = {
        g["name"]: g["id"]
        for g in trytond.rpc(
            "model.res.group.search_read",
            [[], 0, None, None, ["name"], {}],
            session=admin,
        )
    }
    admin_group = groups["Administration"]
    (other_group,) = trytond.rpc(
        "model.res.group.create",
        [[{"name": "Long-polling readers"}], {}],
        session=admin,
    )
    before = server.json("/t/groups", session=user)
    assert admin_group not in before and other_group not in before
    assert server.json("/t/count/ir.error", session=user) == {"denied": "AccessError"}
    # Behind trytond's back: no notification, the cached groups stay.
    with tryton_db.connect() as conn:
        conn.execute(
            'INSERT INTO "res_user-res_group" ("user", "group") VALUES (%s, %s)',
            (user.uid, other_group),
        )
    assert server.json("/t/groups", session=user) == before
    # Through trytond: its commit notifies every process.
    trytond.rpc(
        "model.res.user.write",
        [[user.uid], {"groups": [["add", [admin_group]]]}, {}],
        session=admin,
    )
    after = wait_for(
        lambda: (
            admin_group in (seen := server.json("/t/groups", session=user)) and seen
        ),
        what="fresh groups",
    )
    assert set(after) >= {admin_group, other_group}
    assert "count" in server.json("/t/count/ir.error", session=user)
    trytond.rpc(
        "model.res.user.write",
        [[user.uid], {"groups": [["remove", [admin_group, other_group]]]}, {}],
        session=admin,
    )
    wait_for(
        lambda: server.json("/t/groups", session=user) == before, what="groups removed"
    )


# -- waiting ---------------------------------------------------------------


def test_no_news_is_204_at_the_timeout(server):
    status, _, body = server.request("/t/wait")
    assert (status, body) == (204, b"")


def test_a_handler_waiting_for_an_event_gets_it(server):
    start = server.json("/t/post", params={"message": "first"})
    results: list = []
    poller = threading.Thread(
        target=lambda: results.append(server.json(f"/t/next?after={start}"))
    )
    poller.start()
    server.json("/t/post", params={"message": {"text": "news"}})
    poller.join(30)
    assert results == [{"messages": [{"text": "news"}], "next": start + 1}]


def test_a_waiting_handler_holds_no_cursor(server, tryton_db, user):
    results: list = []
    waiter = threading.Thread(
        target=lambda: results.append(
            server.request("/t/wait_after_read", session=user)
        )
    )
    waiter.start()
    try:
        wait_for(
            lambda: server.json("/t/state")["waiting"] == 1, what="a waiting handler"
        )
        assert server.json("/t/state")["gate"] == {"in_use": 0, "waiting": 0}
        assert orm_backends(tryton_db, ("active", "idle in transaction")) == []
    finally:
        waiter.join(30)
    assert [status for status, _, _ in results] == [204]


def test_the_example_clock_wakes_every_waiting_client_with_one_tick(
    tmp_path, tryton_db
):
    # The example's clock ticks every 5 s: a timeout above that.
    clocked = LongPollingServer(
        tmp_path, tryton_db.name, settings={"longpolling_timeout": 15}
    )
    try:
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            ticks = list(
                pool.map(lambda _: clocked.json("/example/tick")["tick"], range(5))
            )
    finally:
        clocked.stop()
    # Most likely all five waited for the same tick; at worst the first
    # ones were answered one tick before the others.
    assert 1 <= len(set(ticks)) <= 2
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", t) for t in ticks)


# -- the cursor pool ---------------------------------------------------------


def test_200_handlers_in_sql_share_max_cursor_connections(server, tryton_db, user):
    """200 handlers each spend 0.5 s in SQL: exactly MAX_CURSOR run at once
    (the database's clock says so, and pg_stat_activity), not one at a time
    and not more. bench/longpolling.py measures the time it takes."""
    peak = {"sleeping": 0}
    done = threading.Event()

    def sample() -> None:
        with tryton_db.connect() as conn:
            while not done.is_set():
                (sleeping,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = %s AND state = 'active' "
                    "AND query LIKE 'SELECT pg_sleep%%'",
                    (tryton_db.name, ORM_APPLICATION),
                ).fetchone()
                peak["sleeping"] = max(peak["sleeping"], sleeping)
                time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            answers = list(
                pool.map(
                    lambda _: server.request(
                        "/t/sleep", session=user, params={"seconds": "0.5"}
                    ),
                    range(200),
                )
            )
    finally:
        done.set()
        sampler.join(10)
    assert [status for status, _, _ in answers] == [200] * 200
    spans = [json.loads(body) for _, _, body in answers]
    # Most handlers in SQL at one instant, by the database's clock.
    edges = sorted(
        [(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = overlap = 0
    for _, step in edges:
        running += step
        overlap = max(overlap, running)
    assert overlap == MAX_CURSOR
    assert peak["sleeping"] == MAX_CURSOR
    # trytond's pool: one connection per cursor, a few more for its own
    # lookups and its cache listener, never one per handler.
    assert len({s["pid"] for s in spans}) <= 2 * MAX_CURSOR + 1


def test_pool_exhausted_is_503_with_retry_after(tryton_db, user, tmp_path):
    busy = LongPollingServer(
        tmp_path,
        tryton_db.name,
        settings={"max_cursor": 1, "pool_timeout": 0.5, "longpolling_timeout": 30},
    )
    try:
        # Loading the models holds the one cursor a moment at start.
        wait_for(
            lambda: busy.request("/t/whoami", session=user)[0] == 200, what="models"
        )
        logged = len(busy.log_text())
        holder: list = []
        thread = threading.Thread(
            target=lambda: holder.append(
                busy.request("/t/sleep", session=user, params={"seconds": "5"})
            )
        )
        thread.start()
        try:
            wait_for(
                lambda: any(
                    "pg_sleep" in query
                    for _, _, query in orm_backends(tryton_db, ("active",))
                ),
                what="the first handler in SQL",
            )
            status, headers, body = busy.request("/t/whoami", session=user)
            assert (status, headers["Retry-After"]) == (503, "5")
            assert "try again later" in json.loads(body)["error"]
            # The JavaScript client is told when to come back.
            (error,) = [
                line
                for line in run_js(
                    busy.url,
                    "/t/whoami",
                    session=js_session(user),
                    stopAfter={"errors": 1},
                )
                if line["type"] == "error"
            ]
            assert (error["status"], error["retryAfter"]) == (503, 5)
        finally:
            thread.join(30)
        assert holder[0][0] == 200
        # The cursor is free again: the next request gets it.
        assert busy.json("/t/whoami", session=user)["uid"] == user.uid
        busy_lines = re.findall(
            r"Cannot answer GET /longpolling/t/whoami .* busy", busy.log_text()[logged:]
        )
        assert len(busy_lines) == 1
        assert (
            len(re.findall(r"Cannot answer POST .* busy", busy.log_text()[logged:]))
            == 1
        )
    finally:
        busy.stop()


def test_broken_connections_are_replaced(server, tryton_db, user):
    assert server.json("/t/whoami", session=user)["uid"] == user.uid
    with tryton_db.connect() as conn:
        terminated = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s",
            (tryton_db.name, ORM_APPLICATION),
        ).fetchall()
    assert terminated
    for _ in range(2 * MAX_CURSOR):
        assert server.json("/t/whoami", session=user)["uid"] == user.uid


# -- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/nope", {}, 404),
        ("PUT", "/t/echo/x", {}, 405),
        (
            "POST",
            "/t/echo/x",
            {"body": b"{oops", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        ("GET", "/t/echo/x?word=twice", {}, 400),
    ],
)
def test_bad_requests(server, method, path, kwargs, status):
    assert server.request(path, method=method, **kwargs)[0] == status


def test_a_handler_that_raises_is_500_with_one_traceback_and_no_cursor_left(
    server, tryton_db, user
):
    logged = len(server.log_text())
    status, _, body = server.request("/t/boom", session=user)
    assert (status, json.loads(body)) == (500, {"error": "internal server error"})
    log = server.log_text()[logged:]
    assert log.count("Traceback (most recent call last)") == 1
    assert log.count("RuntimeError: boom from a handler") == 1
    assert log.count("Internal error answering GET /longpolling/t/boom") == 1
    assert server.json("/t/state")["gate"] == {"in_use": 0, "waiting": 0}
    assert orm_backends(tryton_db, ("active", "idle in transaction")) == []


def test_no_cursor_left_after_1000_requests_some_failing(
    server, tryton_db, user, admin
):
    requests = [
        ("/t/whoami", {"session": user}, 200),
        ("/t/boom", {"session": user}, 500),
        (
            "/t/write",
            {
                "session": admin,
                "params": {"how": "orm", "name": "x", "target": user.uid},
            },
            200,
        ),
        ("/t/anon_model", {}, 401),
        ("/t/whoami", {"session": Session("lp_user", user.uid, "1" * 64)}, 401),
        (
            "/t/echo/x",
            {"body": b"[", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        ("/t/count/ir.error", {"session": user}, 200),
        ("/t/sleep", {"session": user, "params": {"seconds": "0.01"}}, 200),
    ]

    def run(index: int) -> tuple[int, int]:
        path, kwargs, expected = requests[index % len(requests)]
        return server.request(path, **kwargs)[0], expected

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(run, range(1000)))
    assert [got for got, _ in outcomes] == [expected for _, expected in outcomes]
    assert server.json("/t/state")["gate"] == {"in_use": 0, "waiting": 0}
    assert orm_backends(tryton_db, ("active", "idle in transaction")) == []
    with tryton_db.connect() as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = %s",
            (tryton_db.name, ORM_APPLICATION),
        ).fetchone()
    assert count <= 2 * MAX_CURSOR + 1


def test_database_out_of_reach_is_503_and_recovers_without_restart(
    tryton_db, trytond, user, tmp_path, appliance
):
    socket_directory = re.search(r"host=([^&]+)", tryton_db.uri).group(1)
    proxy = TcpProxy(str(Path(socket_directory) / ".s.PGSQL.5432"))
    proxy.restore()
    conf = tmp_path / "trytond.conf"
    conf.write_text(
        tryton_db.trytond_conf.read_text().replace(
            tryton_db.uri, f"postgresql://tryton@127.0.0.1:{proxy.port}/"
        )
    )
    assert f"127.0.0.1:{proxy.port}" in conf.read_text()
    cut = LongPollingServer(
        tmp_path,
        tryton_db.name,
        trytond_config=conf,
        settings={"pool_timeout": 1, "longpolling_timeout": 5},
    )
    try:
        assert cut.json("/t/whoami", session=user)["uid"] == user.uid
        proxy.cut()
        status, headers, _ = cut.request("/t/whoami", session=user)
        assert (status, headers["Retry-After"]) == (503, "5")
        lines = re.findall(
            r"Cannot answer GET /longpolling/t/whoami .*", cut.log_text()
        )
        assert len(lines) == 1
        # Routes without the database still answer.
        assert cut.request("/t/text/x")[0] == 200
        proxy.restore()
        wait_for(
            lambda: cut.request("/t/whoami", session=user)[0] == 200,
            timeout=60,
            what="recovery",
        )
        assert cut.json("/t/whoami", session=user)["login"] == "lp_user"
    finally:
        cut.stop()
        proxy.close()


def test_transactions_and_sessions_of_the_models_are_read_only(server, user):
    assert server.json("/t/read_only", session=user) == {
        "transaction_read_only": "on",
        "default_transaction_read_only": "on",
        "application_name": ORM_APPLICATION,
    }


# -- through the appliance ----------------------------------------------------


def test_nginx_sends_the_prefix_to_the_realtime_server(appliance):
    status, _, body = http(f"{appliance.url}/longpolling/example/hello/nginx")
    assert (status, body) == (200, b"Hello, nginx!")
    session = appliance.login()
    status, _, body = http(
        f"{appliance.url}/longpolling/example/whoami",
        headers={"Authorization": f"Session {session}"},
    )
    assert status == 200
    assert json.loads(body)["login"] == "admin"


# -- the JavaScript client --------------------------------------------------


def js_session(session: Session, database: str | None = None) -> dict:
    """*session* as Tryton's web client keeps it."""
    value = {"login": session.login, "user_id": session.uid, "session": session.key}
    if database is not None:
        value["database"] = database
    return value


def run_js(url: str, path: str, timeout: float = 60, **config) -> list[dict]:
    """Run js/longpolling.js against *url* with node; return what it reported."""
    node = shutil.which("node")
    assert node, "node is not on PATH (make build installs it)"
    result = subprocess.run(
        [node, str(JS_CLIENT), json.dumps({"url": url, "path": path, **config})],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"type": "stopped"}, lines
    return lines


def test_js_client_polls_again_after_each_answer(server):
    lines = run_js(
        server.url, "/t/echo/js", params={"x": 1}, stopAfter={"successes": 3}
    )
    assert [line["type"] for line in lines] == ["fetch", "success"] * 3 + ["stopped"]
    assert {
        json.dumps(line["data"]) for line in lines if line["type"] == "success"
    } == {json.dumps({"word": "js", "params": {"x": 1}, "uid": None, "context": {}})}


def test_js_client_waits_for_the_promise_success_returns(server):
    lines = run_js(
        server.url, "/t/echo/js", successDelayMs=200, stopAfter={"successes": 3}
    )
    events = [(line["type"], line.get("n")) for line in lines]
    # Each poll starts only once the previous answer is dealt with.
    for n in (1, 2):
        assert events.index(("success-done", n)) < events.index(("fetch", n + 1))
    assert events.index(("success", 1)) < events.index(("success-done", 1))


def test_js_client_polls_again_after_a_timeout_without_calling_back(server):
    lines = run_js(server.url, "/t/wait", stopAfter={"fetches": 2})
    # Two polls answered 204: neither success nor error.
    assert [line["type"] for line in lines] == ["fetch", "fetch", "stopped"]


def test_js_client_sends_the_tryton_session(server, user, tryton_db):
    lines = run_js(
        server.url,
        "/t/whoami",
        session=js_session(user, tryton_db.name),
        stopAfter={"successes": 1},
    )
    (success,) = [line for line in lines if line["type"] == "success"]
    assert (success["data"]["uid"], success["data"]["login"]) == (user.uid, "lp_user")


def test_js_client_stops_when_refused(server, user):
    forged = js_session(Session(user.login, user.uid, "2" * 64))
    lines = run_js(server.url, "/t/whoami", session=forged, stopAfter={"fetches": 5})
    assert [line["type"] for line in lines] == ["fetch", "error", "stopped"]
    assert (lines[1]["status"], lines[1]["body"]) == (
        401,
        {"error": "invalid or expired session"},
    )


def test_js_client_retries_after_network_errors(server):
    closed = f"http://127.0.0.1:{free_port()}"
    lines = run_js(
        closed,
        "/t/echo/x",
        options={"minDelay": 10, "maxDelay": 40},
        stopAfter={"errors": 3},
    )
    assert [line["type"] for line in lines] == ["fetch", "error"] * 3 + ["stopped"]
    assert {line["status"] for line in lines if line["type"] == "error"} == {0}


def test_a_handler_listens_to_the_database_bridge_missing_nothing(
    server, tryton_db, user
):
    def publish(message):
        with tryton_db.connect() as conn, conn.transaction():
            outbox.publish(conn.cursor(), message, "notices")

    def positioned(message):
        with tryton_db.connect() as conn:
            (epoch,) = conn.execute(outbox.STATE).fetchone()[:1]
            row = conn.execute(
                f"SELECT position FROM {outbox.TABLE} "
                "WHERE channel = 'notices' AND payload::jsonb = %s::jsonb",
                (json.dumps(message),),
            ).fetchone()
        return outbox.format_position(epoch, row[0]) if row and row[0] else None

    before = {"n": time.monotonic_ns()}
    publish(before)
    since = wait_for(lambda: positioned(before), what="a position")
    one = {"n": "one", "nonce": since}
    publish(one)
    wait_for(lambda: positioned(one), what="a position")
    # Published before the poll: it comes at once.
    answer = server.json("/example/notices", session=user, params={"since": since})
    assert [item["message"] for item in answer] == [one]
    # Published while the next poll waits (or before it reads): it comes.
    results: list = []
    poller = threading.Thread(
        target=lambda: results.append(
            server.json(
                "/example/notices",
                session=user,
                params={"since": answer[-1]["position"]},
            )
        )
    )
    poller.start()
    two = {"n": "two", "nonce": since}
    publish(two)
    poller.join(30)
    assert [item["message"] for item in results[0]] == [two]
    assert results[0][0]["channel"] == "notices"
