"""A chat with rooms for any WSGI application, without Tryton.

:mod:`.chat` holds what the three chat examples share (the namespace and
the users with their tokens); :mod:`.app` is the plain WSGI application.
"""
