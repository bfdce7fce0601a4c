"""The Tryton host and the read-only cursor pool, against a real trytond and
PostgreSQL.

Sessions come from real ``common.db.login`` calls to a trytond serving the
test database; where a test arranges what no client could (an old session,
an inactive user) it writes to the database with SQL, and it cross-checks
the verdict with trytond's own check of the same session.

The pool runs here in psycopg_pool's threaded mode: pytest's process is not
patched by gevent, and patching it would change every other test. The pool
code is the same in both modes (psycopg_pool only uses :mod:`threading` and
:mod:`queue`, which gevent's patch makes cooperative), so limits, fairness,
read-only transactions and the replacement of broken connections are shown
with threads; :func:`test_pool_under_gevent` runs it patched, in a
subprocess, to show that greenlets wait for connections without blocking
each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from oe_web_socketio.auth import (
    Credentials,
    Identity,
    client_address,
    credentials_from_request,
    parse_session,
)
from oe_web_socketio.exceptions import (
    AuthenticationError,
    ConfigError,
    DatabaseUnavailable,
    OeWebSocketIOError,
    PoolTimeout,
)
from oe_web_socketio.hosts.tryton import (
    TrytonAuthenticator,
    TrytonSettings,
    database_uri,
)
from oe_web_socketio.pool import CursorPools

from .tryton import Session, new_password, run_python

pytestmark = pytest.mark.timeout(300)

#: How long tests wait for something that should happen at once.
DEADLINE = 10.0

INVALID = "invalid or expired session"


# -- fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tryton_db):
    return TrytonSettings.from_config_file(str(tryton_db.trytond_conf))


@pytest.fixture
def app_name():
    """An application_name of this test's pool alone, to count its
    connections in pg_stat_activity."""
    return f"oe_wsio_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_pools(settings, app_name):
    """``make_pools(max_cursor=2, timeout=5.0, uris=None)``: cursor pools
    closed at the end of the test."""
    made = []

    def make(max_cursor=2, timeout=5.0, uris=None):
        pools = CursorPools(
            uris or settings.conninfo, max_cursor, timeout, application_name=app_name
        )
        made.append(pools)
        return pools

    yield make
    for pools in made:
        pools.close()


@pytest.fixture
def pools(make_pools):
    return make_pools()


@pytest.fixture
def authenticator(pools, settings, trytond):
    return TrytonAuthenticator(pools, settings, [trytond.database], trytond.database)


@pytest.fixture
def admin_db(tryton_db):
    """A superuser connection to the test database (autocommit)."""
    with tryton_db.connect() as conn:
        yield conn


@pytest.fixture
def user(trytond):
    """A new user: ``(login, password, uid)``."""
    login = f"user-{uuid.uuid4().hex[:8]}"
    password = new_password()
    return login, password, trytond.create_user(login, password)


@pytest.fixture
def session(trytond, user):
    """A session of ``user``, logged in from 127.0.0.1 (no proxy)."""
    login, password, _ = user
    return trytond.login(login, password)


def credentials(session: Session, database: str | None = None) -> Credentials:
    return parse_session(session.header, database)


def refused(authenticator, creds, address, caplog) -> tuple[str, str]:
    """Authenticate, expecting a refusal; return the reason and the one
    log line, checked for the login, uid and address, and for no key."""
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="oe_web_socketio.auth"),
        pytest.raises(AuthenticationError) as info,
    ):
        authenticator.authenticate(creds, address)
    lines = [r for r in caplog.records if r.name == "oe_web_socketio.auth"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert creds.key not in message
    assert creds.key not in caplog.text
    assert creds.key not in str(info.value)
    assert repr(creds.login) in message
    assert f"(uid {creds.uid})" in message
    assert f"from {address or 'no address'} " in message
    return str(info.value), message


def age_session(conn, session: Session, seconds: float) -> None:
    """Move the login of *session* *seconds* into the past."""
    updated = conn.execute(
        "UPDATE ir_session SET create_date = create_date "
        "- make_interval(secs => %s) WHERE key = %s",
        (seconds, session.key),
    ).rowcount
    assert updated == 1


def backends(conn, app_name) -> list[tuple[int, str]]:
    """``(pid, state)`` of the connections named *app_name*."""
    return conn.execute(
        "SELECT pid, state FROM pg_stat_activity WHERE application_name = %s "
        "ORDER BY pid",
        (app_name,),
    ).fetchall()


def wait_for(probe, what: str):
    """Poll *probe* until it returns a true value, at most DEADLINE s."""
    deadline = time.monotonic() + DEADLINE
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


# -- settings --------------------------------------------------------------


def test_settings_from_the_appliance_trytond_conf(settings, tryton_db):
    assert settings.database_uri == tryton_db.uri
    assert settings.session_max_age == 2592000
    # trytond replaces the path and keeps the query (the socket directory).
    conninfo = settings.conninfo(tryton_db.name)
    with psycopg.connect(conninfo) as conn:
        assert conn.info.dbname == tryton_db.name


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "postgresql://tryton@/?host=/run/postgresql&port=5432",
            "postgresql://tryton@/oe?host=/run/postgresql&port=5432",
        ),
        ("postgresql:///", "postgresql:///oe"),
        ("postgresql://", "postgresql:///oe"),
        (
            "postgresql://u:secret@db.example.com:5433/old?sslmode=require",
            "postgresql://u:secret@db.example.com:5433/oe?sslmode=require",
        ),
        ("postgresql://h1:5432,h2:5433/x", "postgresql://h1:5432,h2:5433/oe"),
    ],
)
def test_database_uri_replaces_the_path(uri, expected):
    assert database_uri(uri, "oe") == expected


def test_database_uri_quotes_the_name():
    uri = database_uri("postgresql:///?host=/tmp", "my db/1?#%")
    assert uri == "postgresql:///my%20db%2F1%3F%23%25?host=/tmp"
    assert psycopg.conninfo.conninfo_to_dict(uri)["dbname"] == "my db/1?#%"


def write_conf(tmp_path, text):
    path = tmp_path / "trytond.conf"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_settings_defaults(tmp_path):
    path = write_conf(tmp_path, "[database]\nuri = postgresql:///\n")
    settings = TrytonSettings.from_config_file(path)
    assert settings == TrytonSettings("postgresql:///", 2592000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[web]\nlisten = x\n", "[database] uri: missing"),
        ("[database]\nuri =\n", "[database] uri: missing"),
        ("[database]\nuri = sqlite://\n", "needs PostgreSQL"),
        (
            "[database]\nuri = postgresql:///\n[session]\nmax_age = 1d\n",
            "[session] max_age: not an integer: '1d'",
        ),
        (
            "[database]\nuri = postgresql:///\n[session]\nmax_age = 0\n",
            "[session] max_age: must be a positive number of seconds, got 0",
        ),
        ("uri = postgresql:///\n", "not a valid INI file"),
    ],
)
def test_settings_errors_name_the_file_and_option(tmp_path, text, message):
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        TrytonSettings.from_config_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_settings_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        TrytonSettings.from_config_file(str(tmp_path / "nowhere.conf"))
    assert "cannot read the file" in str(info.value)


def test_pool_errors():
    timeout = PoolTimeout("oe", 2.5)
    assert isinstance(timeout, DatabaseUnavailable)
    assert isinstance(timeout, OeWebSocketIOError)
    assert (
        str(timeout)
        == "database 'oe' busy: no free connection in the pool within 2.5 s"
    )
    down = DatabaseUnavailable("oe", "connection lost")
    assert str(down) == "database 'oe' unavailable: connection lost"
    for error in (timeout, down):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy)) == (type(error), str(error))


# -- authentication: accepted ---------------------------------------------


def test_a_session_from_a_real_login_authenticates(authenticator, trytond, user):
    login, password, uid = user
    session = trytond.login(login, password)
    identity = authenticator.authenticate(credentials(session), "127.0.0.1")
    assert identity == Identity(db=trytond.database, uid=uid, login=login)
    # Naming the database explicitly is the same.
    named = credentials(session, trytond.database)
    assert authenticator.authenticate(named, "127.0.0.1") == identity
    assert trytond.check(session)


def test_the_session_stays_valid(authenticator, session):
    # Read-only: validating neither consumes nor extends the session.
    creds = credentials(session)
    for _ in range(3):
        assert authenticator.authenticate(creds, "127.0.0.1").uid == session.uid


def test_the_login_presented_is_not_proof(authenticator, trytond, session, user):
    # trytond ignores it (Session.check takes the uid and the key); the
    # identity carries the login of res_user.
    creds = Credentials("somebody-else", session.uid, session.key)
    identity = authenticator.authenticate(creds, "127.0.0.1")
    assert identity.login == user[0]
    renamed = Session("somebody-else", session.uid, session.key)
    assert trytond.check(renamed)


def test_through_a_trusted_proxy(authenticator, trytond, user):
    # trytond ([web] num_proxies = 1) records the last X-Forwarded-For
    # entry, normalised; client_address() finds the same one behind nginx.
    login, password, uid = user
    session = trytond.login(login, password, forwarded_for="6.6.6.6, 2001:DB8:0::7")
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_FOR": "6.6.6.6, 2001:db8:0:0:0:0:0:7",
        "HTTP_AUTHORIZATION": f"Session {session.header}",
    }
    address = client_address(environ, ["127.0.0.1"])
    assert address == "2001:db8::7"
    creds = credentials_from_request(environ, None)
    assert authenticator.authenticate(creds, address).uid == uid


# -- authentication: refused ----------------------------------------------


def test_wrong_key(authenticator, session, caplog):
    last = "0" if session.key[-1] != "0" else "1"
    creds = Credentials(session.login, session.uid, session.key[:-1] + last)
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == INVALID
    assert "no session of this user has this key" in line
    assert session.key not in caplog.text


def test_another_users_uid(authenticator, trytond, session, caplog):
    creds = Credentials(session.login, trytond.admin.uid, session.key)
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == INVALID
    assert "no session of this user has this key" in line


def test_a_uid_without_user(authenticator, session, caplog):
    creds = Credentials(session.login, 987654321, session.key)
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == INVALID
    assert "no such user" in line


def test_another_users_key(authenticator, trytond, session, caplog):
    creds = Credentials(session.login, session.uid, trytond.admin.key)
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == INVALID
    assert "no session of this user has this key" in line
    assert trytond.admin.key not in caplog.text


def test_a_forged_session(authenticator, trytond, caplog):
    # Well-formed base64 of a made-up key for the admin.
    forged = Session("admin", trytond.admin.uid, uuid.uuid4().hex * 2)
    creds = credentials(forged)
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == INVALID
    assert "no session of this user has this key" in line
    assert not trytond.check(forged)


def test_a_logged_out_session(authenticator, trytond, session, caplog):
    creds = credentials(session)
    assert authenticator.authenticate(creds, "127.0.0.1")
    trytond.logout(session)
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == INVALID
    assert "no session of this user has this key" in line


def test_an_expired_session(
    authenticator, settings, trytond, session, admin_db, caplog
):
    age_session(admin_db, session, settings.session_max_age + 120)
    reason, line = refused(authenticator, credentials(session), "127.0.0.1", caplog)
    assert reason == INVALID
    assert "the session expired: logged in 2592120 s ago" in line
    # The normal end of a session: not a warning.
    assert [r.levelno for r in caplog.records if r.name.endswith(".auth")] == [
        logging.INFO
    ]
    # trytond agrees (and deletes the row while checking it).
    assert not trytond.check(session)


def test_a_session_just_before_expiry(
    authenticator, settings, trytond, session, admin_db
):
    age_session(admin_db, session, settings.session_max_age - 120)
    assert authenticator.authenticate(credentials(session), "127.0.0.1")
    assert trytond.check(session)


def test_a_session_dated_in_the_future(
    authenticator, settings, trytond, session, admin_db, caplog
):
    # Session.check takes abs(create_date - now): the future expires too.
    age_session(admin_db, session, -(settings.session_max_age + 120))
    reason, line = refused(authenticator, credentials(session), "127.0.0.1", caplog)
    assert reason == INVALID
    assert "the session expired: logged in -2592120 s ago" in line
    assert not trytond.check(session)


def test_an_inactive_user(authenticator, session, admin_db, caplog):
    # In SQL, keeping the session: deactivating through trytond would
    # delete the user's sessions as well, and hide this check.
    admin_db.execute("UPDATE res_user SET active = false WHERE id = %s", (session.uid,))
    reason, line = refused(authenticator, credentials(session), "127.0.0.1", caplog)
    assert reason == INVALID
    assert "the user is inactive" in line


def test_deactivating_through_tryton_deletes_the_sessions(trytond, session, admin_db):
    trytond.rpc(
        "model.res.user.write",
        [[session.uid], {"active": False}, {}],
        session=trytond.admin,
    )
    count = admin_db.execute(
        "SELECT count(*) FROM ir_session WHERE create_uid = %s", (session.uid,)
    ).fetchone()
    assert count == (0,)


def test_an_unknown_database(authenticator, session, caplog):
    creds = credentials(session, "nope")
    reason, line = refused(authenticator, creds, "127.0.0.1", caplog)
    assert reason == "unknown database 'nope'"
    assert "database 'nope' is not served" in line


def test_an_unknown_database_is_never_queried(pools, authenticator, session, caplog):
    refused(authenticator, credentials(session, "template1"), "127.0.0.1", caplog)
    assert pools.stats("template1").idle == 0


def test_a_session_bound_to_another_address(authenticator, trytond, user, caplog):
    login, password, uid = user
    session = trytond.login(login, password, forwarded_for="198.51.100.23")
    creds = credentials(session)
    for address in ("127.0.0.1", None):
        reason, line = refused(authenticator, creds, address, caplog)
        assert reason == INVALID
        assert "bound to the address 198.51.100.23" in line
    assert authenticator.authenticate(creds, "198.51.100.23").uid == uid
    # trytond binds it the same way.
    assert not trytond.check(session)
    assert trytond.check(session, forwarded_for="198.51.100.23")


def test_the_database_down_is_not_an_authentication_error(
    make_pools, settings, trytond, session
):
    def missing(database):
        return settings.conninfo(database + "_missing")

    pools = make_pools(timeout=0.5, uris=missing)
    authenticator = TrytonAuthenticator(
        pools, settings, [trytond.database], trytond.database
    )
    with pytest.raises(DatabaseUnavailable) as info:
        authenticator.authenticate(credentials(session), "127.0.0.1")
    assert not isinstance(info.value, PoolTimeout)
    assert info.value.database == trytond.database


# -- time zones ------------------------------------------------------------


def test_trytond_stores_create_date_in_utc(tryton_db, trytond, session):
    # trytond runs with TZ=Pacific/Kiritimati (UTC+14) here; this
    # connection's TimeZone is the same, so local time is 14 h off UTC.
    with tryton_db.connect(options="-c TimeZone=Pacific/Kiritimati") as conn:
        utc_age, local_age = conn.execute(
            "SELECT extract(epoch FROM (CURRENT_TIMESTAMP AT TIME ZONE 'UTC') "
            "- create_date), extract(epoch FROM LOCALTIMESTAMP - create_date) "
            "FROM ir_session WHERE key = %s",
            (session.key,),
        ).fetchone()
    assert abs(utc_age) < 60
    assert abs(local_age - 14 * 3600) < 60


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_expiry_whatever_the_time_zone_of_our_connections(
    make_pools, settings, trytond, user, admin_db, zone, caplog
):
    # A pool whose connections have TimeZone UTC+14 or UTC-11: comparing
    # create_date with local time would shift expiry by half a day.
    pools = make_pools(
        uris=lambda db: psycopg.conninfo.make_conninfo(
            settings.conninfo(db), options=f"-c TimeZone={zone}"
        )
    )
    authenticator = TrytonAuthenticator(
        pools, settings, [trytond.database], trytond.database
    )
    login, password, _ = user
    fresh = trytond.login(login, password)
    almost = trytond.login(login, password)
    expired = trytond.login(login, password)
    age_session(admin_db, almost, settings.session_max_age - 120)
    age_session(admin_db, expired, settings.session_max_age + 120)
    assert authenticator.authenticate(credentials(fresh), "127.0.0.1")
    assert authenticator.authenticate(credentials(almost), "127.0.0.1")
    _, line = refused(authenticator, credentials(expired), "127.0.0.1", caplog)
    assert "expired" in line
    with pools.cursor(trytond.database) as cur:
        cur.execute("SHOW TimeZone")
        assert cur.fetchone() == (zone,)


# -- the pool --------------------------------------------------------------


def test_at_most_max_cursor_connections(make_pools, trytond, admin_db, app_name):
    pools = make_pools(max_cursor=3, timeout=0.5)
    with contextlib.ExitStack() as stack:
        pids = set()
        for _ in range(3):
            cur = stack.enter_context(pools.cursor(trytond.database))
            cur.execute("SELECT pg_backend_pid()")
            pids.add(cur.fetchone()[0])
        assert len(pids) == 3
        assert pools.stats(trytond.database).in_use == 3
        assert {pid for pid, _ in backends(admin_db, app_name)} == pids
        with pytest.raises(PoolTimeout) as info, pools.cursor(trytond.database):
            pass
        assert info.value.database == trytond.database
        assert info.value.timeout == 0.5
        # No fourth connection was opened while waiting.
        assert len(backends(admin_db, app_name)) == 3
    stats = pools.stats(trytond.database)
    assert (stats.in_use, stats.waiting) == (0, 0)
    assert stats.idle == 3


def test_waiters_are_served_first_come_first_served(make_pools, trytond):
    pools = make_pools(max_cursor=1, timeout=DEADLINE)
    served: list[str] = []

    def wait_and_use(name):
        with pools.cursor(trytond.database) as cur:
            cur.execute("SELECT 1")
            served.append(name)

    names = ["first", "second", "third"]
    with ThreadPoolExecutor(max_workers=len(names)) as executor:
        with pools.cursor(trytond.database):
            futures = []
            for number, name in enumerate(names, start=1):
                futures.append(executor.submit(wait_and_use, name))
                wait_for(
                    lambda n=number: pools.stats(trytond.database).waiting == n,
                    f"{number} waiter(s)",
                )
        for future in futures:
            future.result(timeout=DEADLINE)
    assert served == names


def test_every_transaction_is_read_only(pools, trytond):
    with pools.cursor(trytond.database) as cur:
        cur.execute("SHOW transaction_read_only")
        assert cur.fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            cur.execute("UPDATE res_user SET name = name")
    with (
        pools.cursor(trytond.database) as cur,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        cur.execute("CREATE TABLE oe_wsio_forbidden (id integer)")
    # Even a caller that switches to autocommit cannot write...
    with pools.cursor(trytond.database) as cur:
        cur.connection.autocommit = True
        cur.connection.read_only = False
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            cur.execute("DELETE FROM ir_session WHERE false")
    # ... and the next caller gets a read-only transaction again.
    with pools.cursor(trytond.database) as cur:
        assert not cur.connection.autocommit
        assert cur.connection.read_only
        cur.execute("SELECT 1")
        assert (
            cur.connection.info.transaction_status
            == psycopg.pq.TransactionStatus.INTRANS
        )
    assert pools.stats(trytond.database).in_use == 0


def test_every_use_is_rolled_back(make_pools, trytond):
    # One connection, so the second use gets the first one's connection: a
    # setting made by set_config() survives only if the transaction commits.
    pools = make_pools(max_cursor=1)
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT set_config('oe_wsio.mark', 'committed', false)")
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT pg_backend_pid(), current_setting('oe_wsio.mark', true)")
        assert cur.fetchone() in ((pid, None), (pid, ""))


def test_a_terminated_connection_is_replaced(make_pools, trytond, admin_db, app_name):
    pools = make_pools(max_cursor=1)
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    assert admin_db.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    wait_for(lambda: pid not in dict(backends(admin_db, app_name)), "the backend end")
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT pg_backend_pid()")
        (new_pid,) = cur.fetchone()
    assert new_pid != pid
    stats = pools.stats(trytond.database)
    assert (stats.in_use, stats.idle) == (0, 1)


def test_a_connection_lost_in_use(make_pools, trytond, admin_db, app_name):
    pools = make_pools(max_cursor=1)
    with (
        pytest.raises(DatabaseUnavailable) as info,
        pools.cursor(trytond.database) as cur,
    ):
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
        admin_db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: pid not in dict(backends(admin_db, app_name)), "the backend end"
        )
        cur.execute("SELECT 1")
    assert "connection lost" in str(info.value)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] != pid
    assert pools.stats(trytond.database).in_use == 0


class Boom(Exception):
    pass


def test_nothing_leaks_after_many_uses(make_pools, trytond, admin_db, app_name):
    pools = make_pools(max_cursor=3)
    outcomes = {"ok": 0, "raised": 0, "sql error": 0}
    for number in range(200):
        if number % 5 == 1:
            with pytest.raises(Boom), pools.cursor(trytond.database) as cur:
                cur.execute("SELECT 1")
                raise Boom
            outcomes["raised"] += 1
        elif number % 5 == 3:
            with (
                pytest.raises(psycopg.errors.DivisionByZero),
                pools.cursor(trytond.database) as cur,
            ):
                cur.execute("SELECT 1 / 0")
            outcomes["sql error"] += 1
        else:
            with pools.cursor(trytond.database) as cur:
                cur.execute("SELECT %s::integer", (number,))
                assert cur.fetchone() == (number,)
            outcomes["ok"] += 1
    assert outcomes == {"ok": 120, "raised": 40, "sql error": 40}
    stats = pools.stats(trytond.database)
    assert (stats.in_use, stats.waiting) == (0, 0)
    # No connection was left in a transaction, none beyond max_cursor.
    sessions = backends(admin_db, app_name)
    assert 1 <= len(sessions) <= 3
    assert {state for _, state in sessions} == {"idle"}


def test_an_unreachable_database(make_pools, settings, trytond):
    pools = make_pools(timeout=0.5, uris=lambda db: settings.conninfo(db + "_missing"))
    with pytest.raises(DatabaseUnavailable) as info, pools.cursor(trytond.database):
        pass
    assert not isinstance(info.value, PoolTimeout)
    assert "no connection could be opened" in str(info.value)
    assert pools.stats(trytond.database).in_use == 0


def test_databases_not_mapped_are_refused(make_pools, settings, trytond):
    pools = make_pools(uris={trytond.database: settings.conninfo(trytond.database)})
    with pytest.raises(KeyError), pools.cursor("other"):
        pass
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT current_database()")
        assert cur.fetchone() == (trytond.database,)


def test_closed_pools(make_pools, trytond):
    pools = make_pools()
    with pools.cursor(trytond.database) as cur:
        cur.execute("SELECT 1")
    pools.close()
    pools.close()  # idempotent
    with pytest.raises(DatabaseUnavailable) as info, pools.cursor(trytond.database):
        pass
    assert "closed" in str(info.value)


def test_pool_under_gevent(tryton_db, settings, trytond, app_name):
    """Patched by gevent, 8 greenlets share 2 connections: at most 2 run a
    query at once, the others wait without blocking the hub (a ticker
    greenlet keeps running), and all are served."""
    script = textwrap.dedent(
        f"""
        from oe_web_socketio.patch import patch
        patch()
        import json, time
        import gevent
        from oe_web_socketio.pool import CursorPools

        pools = CursorPools(lambda db: {settings.conninfo(trytond.database)!r},
                            max_cursor=2, timeout=10, application_name={app_name!r})
        running = peak = ticks_while_querying = 0
        done = []

        def query(number):
            global running, peak
            with pools.cursor({trytond.database!r}) as cur:
                running += 1
                peak = max(peak, running)
                cur.execute("SELECT pg_sleep(0.2)")
                running -= 1
            done.append(number)

        def ticker():
            global ticks_while_querying
            while True:
                if running:
                    ticks_while_querying += 1
                gevent.sleep(0.01)

        tick = gevent.spawn(ticker)
        gevent.joinall([gevent.spawn(query, n) for n in range(8)], raise_error=True)
        tick.kill()
        stats = pools.stats({trytond.database!r})
        pools.close()
        print(json.dumps({{"peak": peak, "done": sorted(done),
                          "ticks_while_querying": ticks_while_querying,
                          "in_use": stats.in_use}}))
        """
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["peak"] == 2
    assert outcome["done"] == list(range(8))
    assert outcome["in_use"] == 0
    # The hub kept running while greenlets waited for PostgreSQL: a query
    # blocking the process would never let the ticker see one running.
    assert outcome["ticks_while_querying"] >= 2
