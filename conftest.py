"""Command-line options and fixtures shared by every test of the
repository (the egg's tests too)."""

import pytest

from tests.appliance import ROOT, Appliance


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
