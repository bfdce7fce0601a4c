# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Publishing to Socket.IO clients from ERP code, in the transaction."""

from oe_web_socketio import outbox
from trytond.model import Model
from trytond.transaction import Transaction


def _cursor():
    return Transaction().connection.cursor()


def publish(channel, message, namespace=None):
    """Publish *message* (JSON) on *channel* when the current transaction
    commits: every socket of this database subscribed to *channel* (in
    *namespace*, or in every namespace) receives it, on every
    oe_web_socketio server. Nothing is sent if the transaction rolls back.

    A message to a channel nobody subscribes to now is kept all the same,
    for clients that resume later, until the server prunes it (``history_*``
    settings of oe_web_socketio)."""
    outbox.publish(_cursor(), message, channel, namespace=namespace)


def broadcast(message, namespace=None):
    """Publish *message* to every socket of this database (of *namespace*)
    when the current transaction commits."""
    outbox.broadcast(_cursor(), message, namespace)


def send(sid, message, namespace="/"):
    """Publish *message* to the socket *sid* of *namespace* when the current
    transaction commits (live only: never replayed to a resuming client)."""
    outbox.send(_cursor(), sid, message, namespace)


class Outbox(Model):
    "Socket.IO Outbox"

    __name__ = "web_socketio.outbox"

    @classmethod
    def __register__(cls, module_name):
        super().__register__(module_name)
        # The tables are plain SQL (oe_web_socketio.outbox), which
        # oe_web_socketio reads; it never creates them itself.
        outbox.ensure_schema(_cursor())

    @classmethod
    def publish(cls, channel, message, namespace=None):
        "Publish message on channel when the transaction commits"
        publish(channel, message, namespace)

    @classmethod
    def broadcast(cls, message, namespace=None):
        "Publish message to every socket when the transaction commits"
        broadcast(message, namespace)

    @classmethod
    def send(cls, sid, message, namespace="/"):
        "Publish message to the socket sid when the transaction commits"
        send(sid, message, namespace)
