"""Integrations with web frameworks, one module each.

Each module imports its framework, which the egg does not require: install
web.py to use :mod:`~oe_web_socketio.contrib.webpy`, Flask to use
:mod:`~oe_web_socketio.contrib.flask`. Both build on
:mod:`oe_web_socketio.wsgi`.
"""
