"""Fixtures for the tests of the whole appliance."""

import contextlib
import subprocess

import psycopg
import pytest

from .browser import browser, browser_context  # noqa: F401 (fixtures)
from .tryton import (
    Trytond,
    create_database,
    database_uri,
    drop_database,
    new_password,
)


@pytest.fixture(scope="session")
def tryton_db(appliance, request, tmp_path_factory):
    """A fresh Tryton database named by ``--db``, on the appliance's
    PostgreSQL, with the base modules and ``web_socketio`` activated.

    Dropped first if it exists, and dropped at the end of the session.
    A :class:`tests.tryton.TrytonDatabase`: ``.name``, ``.uri``,
    ``.admin_password``, ``.connect()``.
    """
    name = request.config.getoption("--db")
    if name in ("postgres", "template0", "template1", appliance.database):
        pytest.fail(f"--db {name}: not a database the tests may drop")
    workdir = tmp_path_factory.mktemp("tryton_db")
    try:
        database = create_database(appliance, name, workdir, new_password())
    except (RuntimeError, psycopg.Error, subprocess.TimeoutExpired) as exc:
        with contextlib.suppress(psycopg.Error):
            drop_database(database_uri(appliance), name)
        pytest.fail(f"cannot create the Tryton database {name!r}: {exc}")
    yield database
    drop_database(database.uri, name)


@pytest.fixture(scope="session")
def trytond(tryton_db, tmp_path_factory):
    """A trytond serving ``tryton_db`` on a free port, stopped (by PID) at
    the end of the session.

    A :class:`tests.tryton.Trytond`: ``.url``, ``.database`` (the name),
    ``.rpc()``, ``.login()``, ``.logout()``, ``.create_user()``,
    ``.check()``, ``.admin`` (a session of the admin).
    """
    server = Trytond(tryton_db, tmp_path_factory.mktemp("trytond"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()
