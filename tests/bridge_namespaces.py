"""Namespaces the bridge tests serve (on the server's PYTHONPATH)."""

from oe_web_socketio import Namespace


class OpenNamespace(Namespace):
    """Anonymous clients may subscribe and resume: for a database without
    Tryton (a private cluster), where nobody can log in."""

    def get_initial_acl(self):
        return None
