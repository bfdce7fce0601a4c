# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The demo's Tryton side: every change to a party is published.

Creating, renaming (``name``, ``code``), archiving or deleting parties
publishes one message on the channel :data:`~.party.CHANNEL`
(``demo.parties``) in the same transaction, through
:func:`trytond.modules.web_socketio.publish`: the demo page (served at
``/demo/``) shows it when, and only if, the change commits, whether it was
made in sao, over JSON-RPC or by a script. ``demo.xml`` creates a few
parties once, so that the list is not empty on first sight.
"""

# Models are registered by tryton.cfg ([register]), as trytond 8 wants.
