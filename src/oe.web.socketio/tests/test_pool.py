"""Tests of :mod:`oe_web_socketio.pool` that need no PostgreSQL.

What the pool does with a real server (at most ``max_cursor`` connections,
first come first served, read-only transactions rolled back, broken
connections replaced, under gevent) is tested against the appliance's
PostgreSQL in tests/test_tryton_auth.py. Here: its arguments, its
bookkeeping, and a database out of reach (a Unix socket directory that
does not exist: libpq fails at once, as when PostgreSQL is down).
"""

from __future__ import annotations

import time

import pytest
from oe_web_socketio.exceptions import DatabaseUnavailable, PoolTimeout
from oe_web_socketio.pool import CursorPools, PoolStats

pytestmark = pytest.mark.timeout(30)

#: A server that cannot be reached: no such socket directory.
NOWHERE = "postgresql://nobody@/{}?host=/nonexistent/oe_web_socketio"


@pytest.fixture
def pools():
    """Pools on databases out of reach, that give up after 0.3 s."""
    with CursorPools(NOWHERE.format, 2, 0.3) as pools:
        yield pools


@pytest.mark.parametrize(
    ("max_cursor", "timeout", "message"),
    [
        (0, 1.0, "max_cursor must be at least 1, got 0"),
        (1, 0.0, "timeout must be positive, got 0.0"),
        (1, float("nan"), "timeout must be positive, got nan"),
    ],
)
def test_bad_arguments(max_cursor, timeout, message):
    with pytest.raises(ValueError) as info:
        CursorPools({}, max_cursor, timeout)
    assert str(info.value) == message


def test_a_database_never_used_has_no_pool(pools):
    assert pools.stats("never") == PoolStats(in_use=0, idle=0, waiting=0)


def test_a_database_not_in_the_mapping_is_refused_without_a_pool():
    with CursorPools({"known": NOWHERE.format("known")}, 1, 0.3) as pools:
        with pytest.raises(KeyError), pools.cursor("unknown"):
            pass
        assert pools.stats("unknown") == PoolStats(in_use=0, idle=0, waiting=0)


def test_a_database_out_of_reach_is_unavailable_not_busy(pools):
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info, pools.cursor("db"):
        pass
    # Not PoolTimeout: no connection is in use, none could be opened.
    assert type(info.value) is DatabaseUnavailable
    assert not isinstance(info.value, PoolTimeout)
    assert info.value.database == "db"
    assert "no connection could be opened within 0.3 s" in str(info.value)
    assert time.monotonic() - start >= 0.3
    assert pools.stats("db").in_use == 0


def test_each_caller_gives_up_on_its_own(pools):
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable), pools.cursor("db"):
            pass
    assert pools.stats("db").in_use == 0


def test_closed_pools_refuse_at_once(pools):
    pools.close()
    pools.close()  # idempotent
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info, pools.cursor("db"):
        pass
    assert str(info.value) == "database 'db' unavailable: the pool is closed"
    assert time.monotonic() - start < 0.3  # no wait for a connection


def test_pools_used_then_closed_refuse_their_callers(pools):
    with pytest.raises(DatabaseUnavailable), pools.cursor("db"):
        pass
    pools.close()
    with pytest.raises(DatabaseUnavailable) as info, pools.cursor("db"):
        pass
    assert "the pool is closed" in str(info.value)
