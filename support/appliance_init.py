"""The start of the appliance's generated scripts (bin/trytond, bin/test…).

zc.buildout writes each script of appliance.cfg with its eggs on
``sys.path`` and then runs the part's ``initialization``, which appends
this directory to ``sys.path`` and calls one function of this module with
the buildout's paths and settings. The code lives here, not in the INI
options, so that ruff and mypy read it (``make check``).

Invariants:

* This module imports only the standard library at import time (psycopg
  only inside :func:`wait_for_database`): it runs before anything else of
  the script, in every script.
* Every function takes what it needs as arguments (the buildout
  substitutes them); none reads appliance.cfg.
"""

from __future__ import annotations

import importlib.machinery
import os
import site
import sys
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class TrytonModuleEggs:
    """Finds ``trytond.modules.<name>`` in the eggs of Tryton modules.

    Tryton modules from PyPI (trytond_party…) install into
    ``trytond/modules``, but the buildout keeps each egg in a directory of
    its own, out of reach of the package ``trytond.modules``: this finder,
    last on :data:`sys.meta_path`, looks for ``trytond/modules/<name>`` in
    every entry of :data:`sys.path`.
    """

    @staticmethod
    def find_spec(
        name: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        parts = name.split(".")
        if len(parts) != 3 or parts[:2] != ["trytond", "modules"]:
            return None
        found = [
            os.path.join(entry, "trytond", "modules")
            for entry in sys.path
            if os.path.isdir(os.path.join(entry, "trytond", "modules", parts[2]))
        ]
        if not found:
            return None
        return importlib.machinery.PathFinder.find_spec(name, found)


def init_tryton(develop_eggs: str, trytond_config: str) -> None:
    """Prepare a script that imports trytond.

    :param develop_eggs: the buildout's develop-eggs directory. zc.buildout
        develops eggs with pip's editable installs, whose ``.pth`` files
        (the importer mapping ``trytond.modules.web_socketio`` to
        addons/web_socketio) its scripts do not read by themselves.
    :param trytond_config: the configuration file trytond reads unless
        ``TRYTOND_CONFIG`` or ``-c`` says otherwise.
    """
    site.addsitedir(develop_eggs)
    if not any(isinstance(f, TrytonModuleEggs) for f in sys.meta_path):
        sys.meta_path.append(TrytonModuleEggs())
    os.environ.setdefault("TRYTOND_CONFIG", trytond_config)


def wait_for_database(uri: str, database: str, timeout: float = 30.0) -> None:
    """Return once *database* accepts a connection; exit the process (for
    supervisor to start it again) if it does not within *timeout* seconds.

    trytond 8.0 initialises the pool of each database once, at start; if
    PostgreSQL is not up yet it logs the error and serves a broken pool for
    good. supervisor starts trytond beside PostgreSQL, so it first waits.

    :param uri: the libpq URI of the server, without a database name.
    """
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(uri, dbname=database, connect_timeout=3).close()
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                sys.exit(f"trytond: database '{database}' unreachable: {error}".strip())
            time.sleep(0.5)
        else:
            return


def init_tryton_wsgi(databases: str, gunicorn_config: str) -> None:
    """Prepare bin/tryton_wsgi: gunicorn serving trytond's WSGI application.

    :param databases: the databases whose pools trytond.application
        initialises at start (``TRYTOND_DATABASE_NAMES``, unless set).
    :param gunicorn_config: gunicorn's configuration file, given first on
        its command line.
    """
    os.environ.setdefault("TRYTOND_DATABASE_NAMES", databases)
    sys.argv[1:1] = ["--config", gunicorn_config]


def init_tests(directory: str) -> None:
    """Prepare bin/test (and bin/python): run from the checkout, and give
    the servers the tests start with :data:`sys.executable` the same eggs.

    :param directory: the buildout's directory (the checkout).
    """
    os.chdir(directory)
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)
