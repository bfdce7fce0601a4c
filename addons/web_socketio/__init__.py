# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The Tryton side of oe.web.socketio.

ERP code publishes to Socket.IO clients inside its transaction; the
message is delivered if, and only if, the transaction commits::

    from trytond.modules.web_socketio import publish

    publish("sale.order", {"id": order.id, "state": order.state})

(also ``broadcast(message)``, ``send(sid, message, namespace)``, and the
same as class methods of the model ``web_socketio.outbox``).
"""

from .outbox import broadcast, publish, send

__all__ = ["broadcast", "publish", "send"]

# Models are registered by tryton.cfg ([register]), as trytond 8 wants.
