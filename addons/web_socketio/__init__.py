# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The Tryton side of oe.web.socketio.

Activated in the appliance's database by ``bin/start``; later it gives ERP
code a transactional ``publish(channel, message)``.
"""


def register():
    """Register the models of this module in Tryton's pool (none yet)."""
