"""Real-time Socket.IO server on gevent beside the Tryton ERP.

Importing this package has no side effect: it neither patches gevent nor
reads any file or environment variable. The entry point is
:func:`oe_web_socketio.cli.main`.
"""

__version__ = "0.1.0"
