"""Command-line options shared by every test of the repository."""


def pytest_addoption(parser):
    parser.addoption(
        "--db",
        default="oe_test",
        help="the test database, created (and dropped afterwards) by the tests "
        "that need one (default: %(default)s)",
    )
