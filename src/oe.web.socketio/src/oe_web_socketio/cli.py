"""The command line entry point, ``oe_web_socketio``.

Invariants:

* :func:`main` patches the standard library for gevent
  (:func:`oe_web_socketio.patch.patch`) before anything else, and imports
  the modules that use gevent, Socket.IO (and later trytond and psycopg)
  only after. This module itself imports only the standard library and
  modules that leave gevent alone.
* Settings come from the defaults, overridden by the configuration file
  (``-c``), overridden by the other options.
* A fault of the user (a bad option, a bad configuration file, a
  namespace or route that cannot be registered, an address the server
  cannot listen on: a :class:`~oe_web_socketio.exceptions.UserError`,
  caught in one place, :func:`main`) is reported in one line on stderr,
  without a traceback, with exit status :data:`EXIT_LISTEN` for a
  :class:`~oe_web_socketio.exceptions.ListenError`, :data:`EXIT_USAGE`
  for the others. Anything else is a bug and keeps its traceback.
* The soft limit of open files is raised to the hard one before the
  application is built, whose ``max_connections`` follows from it when not
  set (:func:`oe_web_socketio.limits.session_limit`); the line after the
  address says both.
* SIGTERM and SIGINT stop the server gracefully; the exit status is then
  :data:`EXIT_OK`. A second signal during the shutdown ends the process at
  once.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from oe_web_socketio import __version__
from oe_web_socketio.config import LOG_LEVELS, Config
from oe_web_socketio.exceptions import ConfigError, ListenError, UsageError, UserError
from oe_web_socketio.patch import patch

if TYPE_CHECKING:
    from oe_web_socketio.app import Application
    from oe_web_socketio.server import Server

PROG = "oe_web_socketio"

#: Exit status: stopped by a signal.
EXIT_OK = 0
#: Exit status: the server cannot listen on its address.
EXIT_LISTEN = 1
#: Exit status: bad command line or configuration.
EXIT_USAGE = 2

#: Format of the log records, on stderr.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger(__name__)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the usage and exit; main() prints one line.
        raise UsageError(message)


def _comma_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if "" in items:
        raise argparse.ArgumentTypeError(f"empty name in {value!r}")
    return items


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line; errors raise :class:`UsageError`."""
    parser = _ArgumentParser(
        prog=PROG,
        description="Socket.IO server on gevent beside the Tryton ERP.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "-c", "--config", metavar="CONFIG", help="the configuration file"
    )
    parser.add_argument(
        "-d",
        "--database",
        dest="databases",
        metavar="DB[,DB...]",
        type=_comma_list,
        action="extend",
        help="database(s) to serve, comma separated; repeatable",
    )
    parser.add_argument(
        "-i", "--interface", metavar="IFACE", help="address to listen on"
    )
    parser.add_argument(
        "-p", "--port", type=int, metavar="PORT", help="TCP port to listen on"
    )
    parser.add_argument(
        "--worker",
        metavar="NAME",
        help="this worker's name behind the reverse proxy, which starts "
        "every session id (the appliance gives each worker its own)",
    )
    parser.add_argument(
        "--max-cursor",
        type=int,
        metavar="N",
        help="size of the read-only cursor pool per database",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        metavar="PATH=MODULE:CLASS",
        action="append",
        help="serve the Namespace subclass MODULE:CLASS at PATH (e.g. "
        "/chat=my_egg.chat:Chat); repeatable; replaces the file's namespaces",
    )
    parser.add_argument(
        "--no-entry-points",
        dest="load_entry_points",
        action="store_false",
        default=None,
        help="do not serve the namespaces of the entry point group "
        "oe_web_socketio.namespaces (installed eggs)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="level of the log on stderr",
    )
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """Build the :class:`Config` from parsed options.

    :raises ConfigError: the file or an option has an invalid value.
    """
    config = Config.from_file(args.config) if args.config else Config()
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("databases", args.databases),
            ("interface", args.interface),
            ("port", args.port),
            ("max_cursor", args.max_cursor),
            ("worker", args.worker),
            ("log_level", args.log_level),
            ("namespaces", args.namespaces),
            ("load_entry_points", args.load_entry_points),
        )
        if value is not None
    }
    for key in ("databases", "namespaces"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    try:
        return config.replace(**overrides)
    except ConfigError as exc:
        raise exc.with_source("command line") from None


#: Loggers that report every packet at INFO: below DEBUG they are kept to
#: warnings and errors.
CHATTY_LOGGERS = ("oe_web_socketio.socketio", "oe_web_socketio.engineio")


def configure_logging(level: str, rate_limit: int = 0) -> None:
    """Send log records of *level* and above to stderr, at most
    *rate_limit* lines a minute about one client's faults (``0``: all; see
    :mod:`oe_web_socketio.logs`)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if rate_limit:
        from oe_web_socketio import logs

        logs.install(rate_limit)
    chatty_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty_level)


def listen_error_message(exc: ListenError) -> str:
    """The one line telling the user why the server cannot listen."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {exc.port} on {exc.interface} is already in use; "
            "stop the other server or choose another port with -p"
        )
    return f"{exc}; check -i/--interface and -p/--port"


def serve(server: Server, application: Application) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    Stops accepting, closes the clients' sessions, then waits for open
    connections up to :attr:`Server.stop_timeout`.
    """
    import gevent
    import gevent.event

    stop_requested = gevent.event.Event()
    received: list[signal.Signals] = []

    def request_stop(signum: signal.Signals) -> None:
        received.append(signum)
        stop_requested.set()

    watchers = [
        gevent.signal_handler(signum, request_stop, signum)
        for signum in (signal.SIGTERM, signal.SIGINT)
    ]
    try:
        stop_requested.wait()
    finally:
        # From now on the default action applies: a second signal kills.
        for watcher in watchers:
            watcher.cancel()
    logger.info("Received %s, stopping", received[0].name)
    server.close()
    application.shutdown()
    server.stop()
    logger.info("Stopped")


def user_error_message(exc: UserError) -> str:
    """The one line telling the user what to change."""
    if isinstance(exc, ListenError):
        return listen_error_message(exc)
    return str(exc)


def _fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; return the exit status.

    :param argv: the arguments, without the program name; ``sys.argv[1:]``
        when ``None``.

    ``--help`` and ``--version`` print and raise :class:`SystemExit` (0),
    as argparse does.
    """
    patch()
    try:
        return _run(argv)
    except UserError as exc:
        _fail(user_error_message(exc))
        return EXIT_LISTEN if isinstance(exc, ListenError) else EXIT_USAGE


def _run(argv: Sequence[str] | None) -> int:
    """Parse, build, listen and serve: :func:`main` without its one
    handler of :class:`UserError`."""
    config = load_config(build_parser().parse_args(argv))
    configure_logging(config.log_level, config.log_rate_limit)

    from oe_web_socketio import limits
    from oe_web_socketio.app import Application
    from oe_web_socketio.hosts.tryton import TrytonHost
    from oe_web_socketio.server import make_server

    host = TrytonHost.from_config(config)
    # Its caps follow from the open files limit, which it raised.
    application = Application(config, host)
    # Raises ClusterMismatch: the other workers use another broker.
    application.join()
    eio = application.sio.eio
    server = make_server(config, application, max_connections=eio.max_open_connections)
    server.start()
    logger.info(
        "Listening on %s (databases: %s)", server.url, ", ".join(config.databases)
    )
    logger.info(limits.describe_open_files(eio, server.max_connections))
    application.start()
    serve(server, application)
    return EXIT_OK
