"""Cooperative patching of the standard library for gevent.

:func:`patch` must run before anything imports a module that keeps a
reference to blocking primitives: the server, Socket.IO, trytond and the
PostgreSQL driver.

* trytond makes its ``threading.local`` greenlet-local only when it is
  imported after the patch.
* psycopg 3 (trytond 8.0's driver; psycogreen is for psycopg2 and has no
  effect on it) needs no helper: its wait functions call ``select.poll`` or
  ``select.select``, which gevent makes cooperative, unless its C extension
  is installed and imported before the patch (then it waits in C and every
  query blocks every greenlet). tests/test_gevent_psycopg.py proves it.

Importing this module imports nothing of gevent: only calling :func:`patch`
does.
"""

from __future__ import annotations


def patch() -> None:
    """Patch the standard library for gevent. Idempotent."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
