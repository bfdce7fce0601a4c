"""Command-line options and fixtures shared by every test of the
repository (the egg's tests too)."""

import pytest

from tests.appliance import ROOT, Appliance

#: The egg's tests: those that run in this process and need no appliance
#: are `make check`'s.
EGG_TESTS = ROOT / "src" / "oe.web.socketio" / "tests"

#: Fixtures of the appliance (PostgreSQL, trytond, nginx) and of server
#: processes: a test that uses one (directly or through another) is no
#: unit test.
NOT_UNIT_FIXTURES = frozenset(
    {"appliance", "spawn_server", "module_spawn_server", "server_command"}
)


def pytest_collection_modifyitems(config, items):
    """Mark ``unit`` the egg's tests that run in this process and need no
    appliance (no PostgreSQL, nginx or Chromium, no server process):
    ``make check`` runs them, ``make test`` the others after it."""
    for item in items:
        if item.path.is_relative_to(EGG_TESTS) and NOT_UNIT_FIXTURES.isdisjoint(
            item.fixturenames
        ):
            item.add_marker(pytest.mark.unit)


def pytest_addoption(parser):
    parser.addoption(
        "--db",
        default="oe_test",
        help="the test database, created (and dropped afterwards) by the tests "
        "that need one (default: %(default)s)",
    )


@pytest.fixture(scope="session")
def appliance():
    """This checkout's appliance, running.

    Started with ``bin/start --daemon`` (creating its database on first run)
    unless it already runs; stopped at the end only if started here.
    """
    stack = Appliance(ROOT)
    started_here = not stack.supervisord_running()
    result = stack.run("start", "--daemon", timeout=900)
    if result.returncode != 0:
        if started_here:
            stack.shutdown()
        pytest.fail(f"bin/start failed: {result.stderr.strip()}")
    yield stack
    stack.logout_all()
    if started_here:
        stack.shutdown()
