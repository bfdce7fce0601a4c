"""Hosts: what differs per host application.

The server runs beside a host application (Tryton, later a plain WSGI
application) and shares its database and its users' sessions. Everything
that depends on which host it is lives in one module per host here, behind
small interfaces the rest of the server uses without knowing the host:

* its settings, read from the host's own configuration (the database URI,
  how long a session lives);
* authentication: an :class:`~oe_web_socketio.auth.Authenticator` that
  checks the credentials a client presents against the host's sessions,
  read-only;
* the connection string of each database, for the read-only cursor pool
  (:mod:`oe_web_socketio.pool`);
* later, read access to the host's records (its ORM, or plain SQL).

A host module must not import the host application itself at import time
(trytond, for one, costs seconds to import and reads its own configuration):
the server has to start, and answer, without it.
"""
